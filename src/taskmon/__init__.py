"""taskmon: a text-to-speech task service whose monitor and concurrency cap every worker shares."""

from importlib.metadata import version

# One version number, in pyproject.toml; the installed metadata carries it here.
__version__ = version("taskmon")
