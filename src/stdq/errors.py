"""Errors with the exit codes of docs/exit-codes.md.

Every error a user can cause or meet is one of these; the CLI prints its message
as one or two plain lines and exits with its code. Messages must never hold a
secret: build them from redacted values only.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_UNRESOLVED = 4
EXIT_NO_DATA = 5
EXIT_TEMPORARY = 75
EXIT_INTERRUPTED = 130


class StdqError(Exception):
    """Base class: a message for the user and an exit code."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"


class QueryFailed(StdqError):
    """The service refused the query, or its answer could not be parsed (exit 1)."""

    exit_code = EXIT_FAILED


class BadInput(StdqError):
    """Bad usage or bad input (exit 2, click's own code)."""

    exit_code = EXIT_USAGE


class ConfigError(StdqError):
    """Configuration or credentials missing or refused (exit 3)."""

    exit_code = EXIT_CONFIG


class ResolveError(StdqError):
    """The target name could not be resolved (exit 4)."""

    exit_code = EXIT_UNRESOLVED


class NoData(StdqError):
    """The service answered but has no data for this target (exit 5)."""

    exit_code = EXIT_NO_DATA


class TemporaryFailure(StdqError):
    """Network, timeout, throttling past the retry budget, remote queue full (exit 75)."""

    exit_code = EXIT_TEMPORARY

    def __init__(self, message: str, *, hint: str | None = None, retry_after: float | None = None):
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class DiskFull(TemporaryFailure):
    """No space left on the disk of the data directory while stdq wrote to it (exit 75).

    One line naming the data directory; the job that met it ends as a temporary failure
    with its checkpoint kept (docs/data.md).
    """

    def __init__(self, data_dir: object, what: str = "writing to it"):
        super().__init__(
            f"the disk of the data directory {data_dir} is full (no space left {what});"
            " free some space, then try again"
        )
        self.data_dir = data_dir


def is_disk_full(exc: BaseException) -> bool:
    """Whether EXC says the disk is full (ENOSPC, EDQUOT, or SQLite's SQLITE_FULL)."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return True
    return "database or disk is full" in str(exc)


class Cancelled(StdqError):
    """The job was cancelled while it ran."""

    exit_code = EXIT_FAILED


class Interrupted(StdqError):
    """Ctrl-C, or a detach from a running job (exit 130)."""

    exit_code = EXIT_INTERRUPTED


def exit_code_of(exc: BaseException) -> int:
    """The exit code for an exception; unknown errors count as failures."""
    if isinstance(exc, StdqError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_FAILED
