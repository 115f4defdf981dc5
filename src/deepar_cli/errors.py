"""Typed errors raised by the library; only the CLI turns them into messages and exit codes."""

from __future__ import annotations

import signal


class DeepARCliError(Exception):
    """Base class: a problem the user can fix, reported as one line."""

    exit_code = 1


class UsageError(DeepARCliError):
    """Options that contradict each other or make no sense (EX_USAGE)."""

    exit_code = 64


class DataError(DeepARCliError):
    """A channel or record that breaks SageMaker's format (EX_DATAERR)."""

    exit_code = 65


class HyperparameterError(DeepARCliError):
    """A hyperparameter that is missing, unknown or out of range (EX_CONFIG)."""

    exit_code = 78


class ModelError(DeepARCliError):
    """A model folder that is missing, incomplete or unreadable (EX_NOINPUT)."""

    exit_code = 66


class OutputError(DeepARCliError):
    """An output that cannot be written (EX_CANTCREAT)."""

    exit_code = 73


class RequestError(DeepARCliError):
    """An inference request or configuration that SageMaker's DeepAR would refuse."""

    exit_code = 65


class Interrupted(BaseException):
    """SIGINT or SIGTERM while a command runs (exit 128 + the signal: 130, 143).

    A BaseException, and no KeyboardInterrupt, so that no library's `except` swallows it
    (GluonTS's MXNet trainer catches KeyboardInterrupt, stops, and saves the epochs so far);
    `finally` blocks, atomic_dir's among them, still remove what was half written.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum


def reason(exc: BaseException) -> str:
    """An exception's message on one line, for wrapping in a typed error. MXNet's errors
    carry a C++ traceback and the check that failed ("Traceback ... MXNetError: Check
    failed: fi->Read(data): Invalid NDArray file format"): only the last part is kept
    ("Invalid NDArray file format"). Other messages keep their first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("MXNetError: "):
            return line.rsplit(": ", 1)[-1]
    return lines[0] if lines else type(exc).__name__
