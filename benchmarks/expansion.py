"""``python -m benchmarks.expansion [--repeats R]``: the encoder's head cut, measured.

``TextEncoder.encode`` cuts each text to a head before normalising (``model.encoder``).
This times it against the full path it replaced (the tokenizer on the whole of every text,
truncated afterwards), on the toy model's encoder (``max_tokens`` 512), in chunks of 500
texts as the worker polls them:

- ordinary articles: the Reuters-21578 test split when it has been fetched (``tagstream data
  fetch``), else synthetic ones; and the same articles repeated to about 20,000 characters,
  so every one of them is cut;
- 40 bodies of U+FDFA at the 256 KiB limit, in one chunk: seconds for the chunk, and the
  growth of peak resident memory (``ru_maxrss``) of a fresh process encoding it.

Rates are medians of ``repeats`` runs, the two paths taking turns to go first; the
expanding bodies run after them, ``wide-repeats`` times per path.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import corpus
from model.encoder import UNK_ID, TextEncoder
from model.toy import synthetic_articles, toy_artifact

CHUNK = 500
BODY = "\ufdfa" * (256 * 1024 // 3)
WIDE = 40


def full_path(encoder: TextEncoder, texts: Sequence[str]) -> list[list[int]]:
    """The encoding before the cut: every whole text, truncated afterwards."""
    encodings = encoder.tokenizer.encode_batch(list(texts), add_special_tokens=False)
    return [e.ids[: encoder.max_tokens] or [UNK_ID] for e in encodings]


EncodePath = Callable[[TextEncoder, Sequence[str]], list[list[int]]]
PATHS: dict[str, EncodePath] = {"cut": TextEncoder.encode, "full": full_path}


def ordinary_texts() -> tuple[str, list[str]]:
    try:
        return "Reuters-21578 test split", [a.text for a in corpus.load().test]
    except Exception:
        made = synthetic_articles(("earn", "acq", "crude"), 3000, max_words=250)
        return "synthetic, up to 250 words", [a.text for a in made]


def articles_per_s(encoder: TextEncoder, path: EncodePath, texts: Sequence[str]) -> float:
    started = time.perf_counter()
    for first in range(0, len(texts), CHUNK):
        path(encoder, texts[first : first + CHUNK])
    return len(texts) / (time.perf_counter() - started)


def child(path_name: str) -> None:
    """Encode one chunk of expanding bodies and print seconds and peak memory growth."""
    encoder = toy_artifact().encoder
    path = PATHS[path_name]
    path(encoder, ["warm up"])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    path(encoder, [BODY] * WIDE)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_growth_mib": (after - before) / 1024}))


def expanding(path_name: str) -> dict[str, float]:
    command = [sys.executable, "-m", "benchmarks.expansion", "--child", path_name]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    figures: dict[str, float] = json.loads(out)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.expansion", description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--wide-repeats", type=int, default=1)
    parser.add_argument("--child", choices=sorted(PATHS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    encoder = toy_artifact().encoder
    source, texts = ordinary_texts()
    long_texts = [(t + "\n") * (20_000 // (len(t) + 1) + 1) for t in texts[:1000]]
    sets = {"ordinary": texts, "long": long_texts}
    for name, chosen in sets.items():
        assert PATHS["cut"](encoder, chosen) == full_path(encoder, chosen), name
    rates: dict[tuple[str, str], list[float]] = {}
    wide: dict[str, list[dict[str, float]]] = {name: [] for name in PATHS}
    for repeat in range(args.repeats):
        order = list(PATHS) if repeat % 2 == 0 else list(reversed(PATHS))
        for set_name, chosen in sets.items():
            for path_name in order:
                rate = articles_per_s(encoder, PATHS[path_name], chosen)
                rates.setdefault((set_name, path_name), []).append(rate)
    for _ in range(args.wide_repeats):
        for path_name in PATHS:
            wide[path_name].append(expanding(path_name))
    print(f"ordinary articles: {source}, {len(texts)} texts, median {_median_chars(texts)} chars")
    print(f"long articles: {len(long_texts)} texts, median {_median_chars(long_texts)} chars")
    print("| texts | path | articles/s (median) | min | max |")
    print("|---|---|---|---|---|")
    for (set_name, path_name), values in rates.items():
        print(
            f"| {set_name} | {path_name} | {statistics.median(values):,.0f} "
            f"| {min(values):,.0f} | {max(values):,.0f} |"
        )
    print(f"| {WIDE} U+FDFA bodies of 256 KiB | path | seconds | peak RSS growth MiB |")
    print("|---|---|---|---|")
    for path_name, runs in wide.items():
        seconds = statistics.median(r["seconds"] for r in runs)
        growth = statistics.median(r["peak_growth_mib"] for r in runs)
        print(f"| | {path_name} | {seconds:.2f} | {growth:,.0f} |")


def _median_chars(texts: Sequence[str]) -> int:
    return int(statistics.median(len(t) for t in texts))


if __name__ == "__main__":
    main()
