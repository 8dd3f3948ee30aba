"""Errors a user can act on. The CLIs print them as one line and exit with code 2."""


class FastgenError(Exception):
    """A problem with the user's input or environment, stated in one actionable line."""


class DataError(FastgenError):
    """Dataset files missing, unreadable or corrupt."""


class Interrupted(FastgenError):
    """SIGINT/SIGTERM: the current step finished, a checkpoint was written, the run can be resumed."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum
