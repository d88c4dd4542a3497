"""The chaos harness: faults cut Redis, its network or a worker under load, and a checker per
scenario judges whether the service kept its promises (`nox -s chaos`, docs/chaos.md)."""
