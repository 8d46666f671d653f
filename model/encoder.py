"""Text to token ids: a word-level vocabulary on HF ``tokenizers``, trained on the train split.

Normalisation is NFKC, lower-casing and every digit mapped to ``0`` (so "1.25 mln" and
"3.50 mln" share their shape); pre-tokenisation splits on whitespace and punctuation runs.

Truncation rule: an article keeps its *first* ``max_tokens`` tokens. ``Article.text`` puts the
title first, so the title and the lead, where news states its subject, always survive.

Bounded work per text: a text is cut to a head of ``CHARS_PER_TOKEN`` characters per token
it may keep *before* it is normalised (fewer where NFKC lengthens that head), and texts are
encoded in sub-batches of at most ``SUB_BATCH_CHARS`` characters. NFKC can turn one character
into many tokens (U+FDFA, 3 UTF-8 bytes, becomes 18 characters and 4 words), so the whole of
a 256 KiB body could become a quarter of a million tokens; its head cannot. The cut never
changes the ids: normalisation and pre-tokenisation only look at neighbouring characters, so
a head's tokens are the text's own except the last one or two, where the cut falls. A head
that yields more than ``max_tokens + TOKEN_MARGIN`` tokens therefore gives exactly the text's
first ``max_tokens``; one that yields fewer (long words) is doubled and encoded again, up to
the whole text.

ASCII text, nearly all of the news this reads, skips the tokenizer library: lower-casing and
the digit mapping are ``str.translate``, the split is the same ``\\w+|[^\\w\\s]+`` in ASCII
mode, and NFKC leaves ASCII as it is, so the ids are the library's to the bit (tests compare
them on the Reuters corpus and on generated ASCII). It costs a quarter of the library's CPU
per article and takes no thread pool (the library encodes a batch on a pool of one thread per
core that spins while it waits). Only an encoder whose pipeline is exactly the one
:meth:`TextEncoder.train` builds takes this path, and text holding a special token's literal
(``[PAD]``), which the library matches before normalising, goes to the library.

Every string encodes to at least one id: text with no tokens (empty, only spaces) becomes the
single ``[UNK]`` id, and text Python holds but UTF-8 cannot (lone surrogates) has those code
points replaced before encoding. Id 0 is ``[PAD]`` and never comes out of :meth:`encode`.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

from model.errors import ModelError

PAD = "[PAD]"
UNK = "[UNK]"
PAD_ID = 0
UNK_ID = 1
DEFAULT_MAX_TOKENS = 512
CHARS_PER_TOKEN = 8
"""Characters of a text's head per token kept: English averages about 6 with the spaces."""
TOKEN_MARGIN = 8
"""Tokens a head must yield beyond ``max_tokens`` for its first ``max_tokens`` to be exact."""
MIN_CUT = 64
"""The shortest first head, however much NFKC lengthens it."""
SUB_BATCH_CHARS = 1 << 15
"""Characters of heads encoded in one tokenizer call (a text longer than this goes alone)."""

NORMALIZER = {
    "type": "Sequence",
    "normalizers": [
        {"type": "NFKC"},
        {"type": "Lowercase"},
        {"type": "Replace", "pattern": {"Regex": "\\d"}, "content": "0"},
    ],
}
PRE_TOKENIZER = {"type": "Whitespace"}
"""The pipeline :meth:`TextEncoder.train` builds, as the tokenizer's JSON states it: only an
encoder with exactly this one takes the ASCII path."""
ASCII_WORDS = re.compile(r"\w+|[^\w\s]+", re.ASCII)
"""The ``Whitespace`` pre-tokenizer's pattern; on ASCII, Rust's Unicode ``\\w`` and ``\\s`` are
``[A-Za-z0-9_]`` and ``[\\t\\n\\v\\f\\r ]``, as Python's in ASCII mode."""
ASCII_FOLD = str.maketrans(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ123456789", "abcdefghijklmnopqrstuvwxyz000000000"
)
"""Lower-casing and every digit to ``0``, on ASCII."""


@dataclass(frozen=True)
class TextEncoder:
    """A trained tokenizer plus the truncation length; immutable and safe to share."""

    tokenizer: Tokenizer
    max_tokens: int = DEFAULT_MAX_TOKENS

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ModelError(f"max_tokens must be at least 1, not {self.max_tokens}")
        if self.tokenizer.token_to_id(PAD) != PAD_ID or self.tokenizer.token_to_id(UNK) != UNK_ID:
            raise ModelError(f"tokenizer must map {PAD} to {PAD_ID} and {UNK} to {UNK_ID}")

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        *,
        vocab_size: int = 30_000,
        min_frequency: int = 2,
        max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> TextEncoder:
        """Learn the vocabulary (most frequent words first) from ``texts``."""
        tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
        tokenizer.normalizer = normalizers.Sequence(
            [normalizers.NFKC(), normalizers.Lowercase(), normalizers.Replace(Regex(r"\d"), "0")]
        )
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.WordLevelTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=[PAD, UNK],
            show_progress=False,
        )
        tokenizer.train_from_iterator((_valid_utf8(text) for text in texts), trainer)
        return cls(tokenizer, max_tokens)

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, in order; each list has 1..``max_tokens`` ids."""
        ids: list[list[int]] = [[] for _ in texts]
        cuts = [self._first_cut(text) for text in texts]
        pending = list(range(len(texts)))
        while pending:
            heads = (texts[i][: cuts[i]] for i in pending)  # cut as each sub-batch is formed
            encoded = [row for part in _sub_batches(heads) for row in self._encode_all(part)]
            left = []
            for i, head_ids in zip(pending, encoded, strict=True):
                if len(texts[i]) <= cuts[i] or len(head_ids) > self.max_tokens + TOKEN_MARGIN:
                    ids[i] = head_ids[: self.max_tokens] or [UNK_ID]
                else:  # the head holds too few tokens to be sure of them: a longer one
                    cuts[i] *= 2
                    left.append(i)
            pending = left
        return ids

    def _first_cut(self, text: str) -> int:
        """Characters of ``text`` to encode first: fewer where NFKC lengthens its head.

        The growth is measured on the head's first ``max_tokens + TOKEN_MARGIN`` characters
        (Python's NFKC is slow on the characters that expand most).
        """
        cut = CHARS_PER_TOKEN * (self.max_tokens + TOKEN_MARGIN)
        head = text[:cut]
        if len(text) <= cut or head.isascii() or unicodedata.is_normalized("NFKC", head):
            return cut
        sample = head[: self.max_tokens + TOKEN_MARGIN]
        grown = max(len(unicodedata.normalize("NFKC", sample)), len(sample))
        return max(MIN_CUT, cut * len(sample) // grown)

    @cached_property
    def _ascii_vocab(self) -> dict[str, int] | None:
        """The word -> id map when the ASCII path gives the library's ids, else None."""
        try:
            config = json.loads(self.tokenizer.to_str())
        except Exception:  # not a tokenizers.Tokenizer (a wrapper in a test)
            return None
        model = config.get("model") or {}
        if (
            config.get("normalizer") != NORMALIZER
            or config.get("pre_tokenizer") != PRE_TOKENIZER
            or model.get("type") != "WordLevel"
            or model.get("unk_token") != UNK
        ):
            return None
        return dict(model["vocab"])

    @cached_property
    def _literals(self) -> tuple[str, ...]:
        """Added tokens' text: the library matches these in the raw text, before anything."""
        return tuple(t.content for t in self.tokenizer.get_added_tokens_decoder().values())

    def _encode_all(self, texts: list[str]) -> list[list[int]]:
        """Each text's ids, up to one more than a head needs (the rest is never used)."""
        keep = self.max_tokens + TOKEN_MARGIN + 1
        vocab = self._ascii_vocab
        if vocab is None:
            return self._library(texts, keep)
        out: list[list[int]] = []
        rest: list[int] = []
        for i, text in enumerate(texts):
            if text.isascii() and not any(literal in text for literal in self._literals):
                words = ASCII_WORDS.findall(text.translate(ASCII_FOLD))
                out.append([vocab.get(word, UNK_ID) for word in words[:keep]])
            else:
                out.append([])
                rest.append(i)
        for i, row in zip(rest, self._library([texts[i] for i in rest], keep), strict=True):
            out[i] = row
        return out

    def _library(self, texts: list[str], keep: int) -> list[list[int]]:
        """Each text's first ``keep`` ids from the tokenizer library."""
        if not texts:
            return []
        try:
            encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        except TypeError:  # a lone surrogate somewhere: repair every text and try once more
            encodings = self.tokenizer.encode_batch(
                [_valid_utf8(t) for t in texts], add_special_tokens=False
            )
        return [encoding.ids[:keep] for encoding in encodings]

    def to_json(self) -> str:
        """The tokenizer and the truncation length as one JSON document."""
        return json.dumps(
            {"max_tokens": self.max_tokens, "tokenizer": self.tokenizer.to_str()}, sort_keys=True
        )

    @classmethod
    def from_json(cls, text: str) -> TextEncoder:
        """Inverse of :meth:`to_json`; raises ``ModelError`` when the JSON is not an encoder."""
        try:
            data = json.loads(text)
            return cls(Tokenizer.from_str(data["tokenizer"]), int(data["max_tokens"]))
        except Exception as exc:  # tokenizers raises plain Exception on bad JSON
            raise ModelError(f"not a text encoder: {exc}") from None

    @property
    def digest(self) -> str:
        """sha256 of :meth:`to_json`: two encoders with one digest encode identically."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()


def _sub_batches(texts: Iterable[str]) -> Iterator[list[str]]:
    """``texts`` in order, in runs of at most ``SUB_BATCH_CHARS`` characters (or one text)."""
    run: list[str] = []
    size = 0
    for text in texts:
        if run and size + len(text) > SUB_BATCH_CHARS:
            yield run
            run, size = [], 0
        run.append(text)
        size += len(text)
    if run:
        yield run


def _valid_utf8(text: str) -> str:
    """``text`` with any code point UTF-8 cannot hold (lone surrogates) replaced by U+FFFD."""
    return text.encode("utf-8", errors="replace").decode("utf-8")
