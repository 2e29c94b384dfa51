"""The `charter` command line: a thin skin over the Python API."""

from .main import main

__all__ = ["main"]
