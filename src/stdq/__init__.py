"""stdq: single-target data queries — photometry of one target from survey services."""

__version__ = "0.1.0"
