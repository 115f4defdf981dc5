"""MXNet's process settings, made before MXNet reads them: its OpenMP pool when a command
starts, its engine when a process first loads a model to forecast.

MXNet reads OMP_NUM_THREADS once, at import: left to its own guess it kept one of a
2-vCPU machine's cores idle. A value the user set is always kept, as is MXNET_ENGINE_TYPE.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, Optional

CPU_COUNT = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
    os.cpu_count() or 1)
_VARIABLE = "OMP_NUM_THREADS"
_ENGINE = "MXNET_ENGINE_TYPE"
_user_value: Optional[str] = None
_read = False


def user_threads() -> Optional[str]:
    """OMP_NUM_THREADS as the user set it before deepar-cli touched it, or None."""
    global _user_value, _read
    if not _read:
        _user_value, _read = os.environ.get(_VARIABLE), True
    return _user_value


def use_cores(share: int = 1) -> None:
    """Give each of `share` processes about CPU_COUNT / share OpenMP threads (every core
    for one process), unless the user set OMP_NUM_THREADS."""
    if user_threads() is None:
        os.environ[_VARIABLE] = str(max(1, CPU_COUNT // share))


def start_forecast_engine() -> None:
    """Start MXNet's engine as the synchronous one (NaiveEngine), unless the user chose one
    or this process already ran an operator (the engine starts at the first).

    The forecast path waits on the network at every decoder step (its noise and projection
    are numpy), so the threaded engine only adds hand-offs between threads: 4.3 s against
    3.1 s for the notebook's 200 series x 100 samples on 2 cores. MXNet announces an engine
    other than its default on stderr, a line kept out of the commands' output.
    """
    os.environ.setdefault(_ENGINE, "NaiveEngine")
    import mxnet as mx

    with _stderr_silenced():
        mx.nd.zeros((1,)).wait_to_read()


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """File descriptor 2 (where MXNet's C++ logs) sent to /dev/null inside the block."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
