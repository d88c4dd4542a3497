"""`python -m loadtests [--shape ...]`: see loadtests/runner.py."""

import sys

from loadtests.runner import main

sys.exit(main())
