"""MXNet's OpenMP pool: sized when a command starts, before MXNet is first imported.

MXNet reads OMP_NUM_THREADS once, at import: left to its own guess it kept one of a
2-vCPU machine's cores idle. A value the user set is always kept.
"""

from __future__ import annotations

import os
from typing import Optional

CPU_COUNT = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
    os.cpu_count() or 1)
_VARIABLE = "OMP_NUM_THREADS"
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
