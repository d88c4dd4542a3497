"""`python -m benchmarks.sse [--streams 1000] [--threads 384] [--out sse.json]`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..output import report
from .bench import main_run
from .report import render


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sse")
    parser.add_argument("--streams", type=int, default=1000, help="streams open at once (1000)")
    parser.add_argument("--threads", type=int, default=384, help="gthread threads per worker")
    parser.add_argument("--quick", action="store_true", help="200 streams")
    parser.add_argument("--out", type=Path)
    options = parser.parse_args(argv)
    if options.quick:
        options.streams = min(options.streams, 200)
    result = main_run(options.streams, options.threads)
    return report(render(result), result, options.out)


if __name__ == "__main__":
    sys.exit(main())
