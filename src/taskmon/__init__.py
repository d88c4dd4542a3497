"""taskmon: a text-to-speech task service whose monitor and concurrency cap every worker shares."""

__version__ = "0.1.0"
