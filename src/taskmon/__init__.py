"""taskmon: a text-to-speech task service whose monitor and concurrency cap every worker shares."""

from importlib.metadata import PackageNotFoundError, version

# One version number, in pyproject.toml; the installed metadata carries it here.
try:
    __version__ = version("taskmon")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
