"""The package version, in a leaf module: anything (the report pages, the CLI) can import it without importing the
whole package."""

__version__ = "0.1.0"
