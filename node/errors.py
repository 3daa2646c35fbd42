"""Errors that commands report to the user as one line (no traceback)."""

from __future__ import annotations


class UserError(Exception):
    """Raised by any command, plugins included, for a failure to report as one line.

    Lives in its own module: `python -m node.cli` imports the CLI twice (as `__main__` and
    as `node.cli`), and a class defined there would exist twice."""
