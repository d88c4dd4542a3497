"""`python -m benchmarks.semaphore`: run the benchmark; Ctrl-C still stops everything."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: workers and redis-server stopped", file=sys.stderr)
        sys.exit(130)
