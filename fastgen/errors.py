"""Errors a user can act on. The CLIs print them as one line and exit with code 2."""


class FastgenError(Exception):
    """A problem with the user's input or environment, stated in one actionable line."""


class DataError(FastgenError):
    """Dataset files missing, unreadable or corrupt."""
