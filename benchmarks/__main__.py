"""`python -m benchmarks`: every suite, one report directory; Ctrl-C still stops everything."""

from __future__ import annotations

import sys

from .run import main

if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: workers and redis-server stopped", file=sys.stderr)
        sys.exit(130)
