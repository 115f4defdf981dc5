"""SageMaker's `time_freq` values, spelled the way today's pandas wants them."""

from __future__ import annotations

import re

from deepar_cli.errors import UsageError

# SageMaker writes H (hourly) and T/min (minutes); pandas 2.2+ spells hourly "h".
_UNITS = {"min": "min", "T": "min", "H": "h", "h": "h", "D": "D", "W": "W", "M": "M"}
_PATTERN = re.compile(r"^\s*(\d*)\s*(min|T|H|h|D|W|M)\s*$")
VALID_FREQUENCIES = "min, 5min, 30min, H (or h), D, W, M, with an optional multiple such as 2H"


def pandas_freq(time_freq: str) -> str:
    """Map a SageMaker `time_freq` (e.g. "H", "5min", "D") to a pandas period frequency."""
    match = _PATTERN.match(str(time_freq))
    if not match or match.group(1) in ("0",):
        raise UsageError(f'unknown frequency "{time_freq}"; valid: {VALID_FREQUENCIES}')
    multiple, unit = match.groups()
    return f"{multiple if multiple not in ('', '1') else ''}{_UNITS[unit]}"
