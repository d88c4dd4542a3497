"""What several test suites share: clocks and waits, tasks, fake engines, Redis wiring, HTTP
clients and the adapters' rigs. Tests import from here, never from a conftest file."""
