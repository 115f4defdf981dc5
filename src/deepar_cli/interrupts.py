"""SIGINT and SIGTERM as the exception `errors.Interrupted`, while a command runs."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator

from deepar_cli.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _raise(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def raising() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise `Interrupted` in the main thread; the
    previous handlers come back after it. A signal ignored on entry (SIGINT in a background
    job of a shell script) stays ignored; outside the main thread this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(s, _raise)
    try:
        yield
    finally:
        for s, handler in previous.items():
            if handler is not None:  # None: set outside Python, cannot be put back
                signal.signal(s, handler)
