"""Shared fixtures: a seed, tiny channels, a tiny hyperparameter set, a CLI runner."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, Iterable, List

import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_HYPERPARAMETERS = REPO / "data" / "hyperparameters.json"

# The tiny synthetic data set every training test uses.
TINY_SERIES = 8
TINY_LENGTH = 60
TINY_PREDICTION_LENGTH = 12


@pytest.fixture
def seed() -> int:
    """The seed training tests pass to `train` (the CLI's default)."""
    return 42


@pytest.fixture
def tiny_hp() -> Dict[str, Any]:
    """Raw hyperparameters (as a hyperparameters.json would hold them) for a run of a second."""
    return {
        "time_freq": "H",
        "context_length": 12,
        "prediction_length": TINY_PREDICTION_LENGTH,
        "epochs": 1,
        "mini_batch_size": 8,
        "num_cells": 8,
        "num_layers": 1,
        "num_eval_samples": 10,
    }


def hp_args(values: Dict[str, Any]) -> List[str]:
    """Hyperparameters as `deepar-cli train` options (`--name value`)."""
    args: List[str] = []
    for name, value in values.items():
        args += [f"--{name}", value if isinstance(value, str) else json.dumps(value)]
    return args


@pytest.fixture
def to_args() -> Callable[[Dict[str, Any]], List[str]]:
    return hp_args


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The notebook's generator, shrunk: 8 series, 60 points, last 12 held out of train."""
    from deepar_cli.records import write_records
    from deepar_cli.synthetic import SyntheticSpec, generate

    folder = tmp_path_factory.mktemp("tiny")
    train, test = generate(SyntheticSpec(num_series=TINY_SERIES, length=TINY_LENGTH,
                                         prediction_length=TINY_PREDICTION_LENGTH))
    write_records(folder / "train.json", train)
    write_records(folder / "test.json", test)
    return SimpleNamespace(folder=folder, train=folder / "train.json",
                           test=folder / "test.json", train_records=train, test_records=test)


@pytest.fixture(scope="session")
def tiny_feature_data(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Tiny data with a `cat` (3 groups) and two `dynamic_feat` series per record."""
    from deepar_cli.records import write_records
    from deepar_cli.synthetic import SyntheticSpec, generate

    folder = tmp_path_factory.mktemp("tiny_feat")
    train, test = generate(SyntheticSpec(num_series=TINY_SERIES, length=TINY_LENGTH,
                                         prediction_length=TINY_PREDICTION_LENGTH,
                                         num_categories=3, num_dynamic_feat=2))
    write_records(folder / "train.json", train)
    write_records(folder / "test.json", test)
    return SimpleNamespace(folder=folder, train=folder / "train.json", test=folder / "test.json")


def write_lines(path: Path, lines: Iterable[Any]) -> Path:
    """Write a JSON Lines file: strings as they are, anything else through json.dumps."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        for line in lines:
            handle.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    return path


@pytest.fixture
def jsonl(tmp_path: Path) -> Callable[..., Path]:
    """`jsonl(lines, name="channel.json")` writes a channel file under tmp_path."""

    def make(lines: Iterable[Any], name: str = "channel.json") -> Path:
        return write_lines(tmp_path / name, lines)

    return make


