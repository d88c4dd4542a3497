"""taskmon's load runs: Locust users that record what they saw, and a runner that judges it.

Two sides, two processes. The Locust side (`locustfile.py`, `users.py`, `shapes.py`,
`recording.py`) runs under gevent and only records. The runner (`runner.py`, `python -m
loadtests`) starts the stack, starts Locust, sweeps the tasks at the end, and judges the
invariants from the records, the synthesis journals and its own samples (`evidence.py`,
`verdicts.py`, `slo.py`), then writes the report (`report.py`, `plots.py`). Nothing of the
runner imports Locust, so gevent never patches the process that manages the stack.
"""
