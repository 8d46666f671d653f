"""``python -m benchmarks --mode quick|full [--smoke] [--output docs/benchmarks.md]``

Runs the suite (model only, the client's ceiling, end to end with both guarantees, the naive
loop, scale-out, memory) and writes the report with its plots beside it (``img/``). Kafka:
``TAGSTREAM_KAFKA_BOOTSTRAP`` when set, else a local stack of its own. ``--smoke`` is a tiny
run (toy model, a few hundred messages) that only checks the suite works.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from benchmarks import plots, report, suite
from benchmarks.plan import PLANS
from common.logging import configure

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--mode", choices=("quick", "full"), default="quick")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, toy model (tests)")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    configure("WARNING")
    plan = PLANS["smoke" if args.smoke else args.mode]
    command = shlex.join(["python", "-m", "benchmarks", *sys.argv[1:]])
    results = suite.run(plan, command)
    output: Path = args.output
    plots.draw(results, output.parent / "img")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(report.render(results))
    print(f"wrote {output} in {results.seconds:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
