"""What tests import: the tiny data set's sizes and hyperparameters, and small helpers.

Fixtures live in conftest.py; everything a test module imports by name lives here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_HYPERPARAMETERS = REPO / "data" / "hyperparameters.json"
START = "2016-01-01 00:00:00"

# The tiny synthetic data set every training test uses.
TINY_SERIES = 8
TINY_LENGTH = 60
TINY_PREDICTION_LENGTH = 12
# The seed of the shared tiny model, and the CLI's default seed.
SEED = 42
# Raw hyperparameters (as a hyperparameters.json would hold them) for a run of a second.
TINY_HP: Dict[str, Any] = {
    "time_freq": "H",
    "context_length": 12,
    "prediction_length": TINY_PREDICTION_LENGTH,
    "epochs": 1,
    "mini_batch_size": 8,
    "num_cells": 8,
    "num_layers": 1,
    "num_eval_samples": 10,
}
# The tiny data read as one pass: 8 series x (48-12+1)/12 = 24.7 windows, read 7 times to
# make 20+ batches of 8.
TINY_PLAN = {"batches_per_epoch": 22, "training_windows": 25, "passes": 7}


def hp_args(values: Dict[str, Any]) -> List[str]:
    """Hyperparameters as `deepar-cli train` options (`--name value`)."""
    args: List[str] = []
    for name, value in values.items():
        args += [f"--{name}", value if isinstance(value, str) else json.dumps(value)]
    return args


def write_lines(path: Path, lines: Iterable[Any]) -> Path:
    """Write a JSON Lines file: strings as they are, anything else through json.dumps."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        for line in lines:
            handle.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    return path


def tiny_channels(folder: Path, make_target: Callable[[int, np.ndarray], Any]
                  ) -> Tuple[Path, Path]:
    """8 series of 60 points from `make_target(k, t)`; train drops the last 12."""
    from deepar_cli.data.channels import write_records
    from deepar_cli.data.records import Record

    t = np.arange(TINY_LENGTH)
    cut = TINY_LENGTH - TINY_PREDICTION_LENGTH
    test = [Record(START, np.asarray(make_target(k, t), dtype=float))
            for k in range(TINY_SERIES)]
    train = [Record(START, r.target[:cut]) for r in test]
    write_records(folder / "train.json", train)
    write_records(folder / "test.json", test)
    return folder / "train.json", folder / "test.json"


class Events:
    """A `log` callback that keeps every (event, figures) pair."""

    def __init__(self) -> None:
        self.items: List[Tuple[str, Dict[str, Any]]] = []

    def __call__(self, event: str, figures: Dict[str, Any]) -> None:
        self.items.append((event, dict(figures)))

    def names(self) -> List[str]:
        return [name for name, _ in self.items]

    def of(self, name: str) -> List[Dict[str, Any]]:
        return [figures for event, figures in self.items if event == name]


def usage_error(command: str, message: str) -> str:
    """What click prints (to stderr) for a usage error of `deepar-cli COMMAND`."""
    head = f"Usage: deepar-cli {command} [OPTIONS]" if command else \
        "Usage: deepar-cli [OPTIONS] COMMAND [ARGS]..."
    try_line = f"Try 'deepar-cli {command} --help' for help." if command else \
        "Try 'deepar-cli --help' for help."
    return f"{head}\n{try_line}\n\nError: {message}\n"
