"""Shared fixtures: a seed, tiny channels, a CLI runner, and tiny models trained once per
session (tests that only need *a* model use these instead of training their own).

Names that tests import (sizes, hyperparameters, helpers) live in tests/helpers.py.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, Iterable

import numpy as np
import pytest
from click.testing import CliRunner

from helpers import (
    SEED,
    TINY_HP,
    TINY_LENGTH,
    TINY_PREDICTION_LENGTH,
    TINY_SERIES,
    Events,
    tiny_channels,
    write_lines,
)


@pytest.fixture
def seed() -> int:
    """The seed training tests pass to `train` (the CLI's default)."""
    return SEED


@pytest.fixture
def tiny_hp() -> Dict[str, Any]:
    """Raw hyperparameters (as a hyperparameters.json would hold them) for a run of a second."""
    return dict(TINY_HP)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The notebook's generator, shrunk: 8 series, 60 points, last 12 held out of train."""
    from deepar_cli.data.channels import write_records
    from deepar_cli.data.synthetic import SyntheticSpec, generate

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
    from deepar_cli.data.channels import write_records
    from deepar_cli.data.synthetic import SyntheticSpec, generate

    folder = tmp_path_factory.mktemp("tiny_feat")
    train, test = generate(SyntheticSpec(num_series=TINY_SERIES, length=TINY_LENGTH,
                                         prediction_length=TINY_PREDICTION_LENGTH,
                                         num_categories=3, num_dynamic_feat=2))
    write_records(folder / "train.json", train)
    write_records(folder / "test.json", test)
    return SimpleNamespace(folder=folder, train=folder / "train.json", test=folder / "test.json")


@pytest.fixture(scope="session")
def unit_interval_data(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Targets strictly inside (0, 1), for the beta likelihood."""
    rs = np.random.RandomState(0)
    train, test = tiny_channels(tmp_path_factory.mktemp("beta"), lambda k, t: np.clip(
        0.5 + 0.3 * np.sin(2 * np.pi * t / 24 + k) + 0.05 * rs.randn(t.size), 0.02, 0.98))
    return SimpleNamespace(train=train, test=test)


@pytest.fixture(scope="session")
def count_data(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Non-negative integer counts, for the negative-binomial likelihood."""
    rs = np.random.RandomState(0)
    train, test = tiny_channels(tmp_path_factory.mktemp("counts"),
                                lambda k, t: rs.poisson(3 + 2 * np.sin(2 * np.pi * t / 24 + k)))
    return SimpleNamespace(train=train, test=test)


@pytest.fixture
def jsonl(tmp_path: Path) -> Callable[..., Path]:
    """`jsonl(lines, name="channel.json")` writes a channel file under tmp_path."""

    def make(lines: Iterable[Any], name: str = "channel.json") -> Path:
        return write_lines(tmp_path / name, lines)

    return make


# --------------------------------------------------------------------------- shared models


def _train(folder: Path, hp_values: Dict[str, Any], train: Path, test: Path) -> SimpleNamespace:
    """Train through the library with the test channel scored; keep every log event."""
    from deepar_cli.config.hyperparameters import resolve
    from deepar_cli.model import modelfolder
    from deepar_cli.training import train as run

    hp = resolve(dict(hp_values))
    events = Events()
    summary = run(train, hp, folder / "model", test_channel=test, seed=SEED, log=events)
    return SimpleNamespace(dir=folder / "model", hp=hp, summary=summary, events=events,
                           train=train, test=test, model=modelfolder.load(folder / "model"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, tiny_data: SimpleNamespace
               ) -> SimpleNamespace:
    """One tiny model (TINY_HP, seed 42, the test channel scored), trained once a session.

    dir, hp, summary (training.json), events (the log), train, test (its channels) and
    model (the folder loaded). Read-only: copy the folder before writing into it.
    """
    return _train(tmp_path_factory.mktemp("tiny_model"), TINY_HP, tiny_data.train,
                  tiny_data.test)


@pytest.fixture(scope="session")
def tiny_feature_model(tmp_path_factory: pytest.TempPathFactory,
                       tiny_feature_data: SimpleNamespace) -> SimpleNamespace:
    """The same, trained on the data with `cat` (3 groups) and 2 `dynamic_feat` series."""
    return _train(tmp_path_factory.mktemp("tiny_feature_model"), TINY_HP,
                  tiny_feature_data.train, tiny_feature_data.test)


@pytest.fixture(scope="session")
def likelihood_model(tmp_path_factory: pytest.TempPathFactory,
                     tiny_feature_data: SimpleNamespace, unit_interval_data: SimpleNamespace,
                     count_data: SimpleNamespace) -> Callable[[str], SimpleNamespace]:
    """`likelihood_model(name)`: a tiny two-layer model of that likelihood, trained once a
    session on data in its domain (features for the unbounded ones, (0, 1) for beta,
    counts for negative-binomial)."""
    cache: Dict[str, SimpleNamespace] = {}
    data_of = {"beta": unit_interval_data, "negative-binomial": count_data}

    def get(likelihood: str) -> SimpleNamespace:
        if likelihood not in cache:
            data = data_of.get(likelihood, tiny_feature_data)
            cache[likelihood] = _train(tmp_path_factory.mktemp(likelihood),
                                       {**TINY_HP, "num_layers": 2, "likelihood": likelihood},
                                       data.train, data.test)
        return cache[likelihood]

    return get


@pytest.fixture(scope="session")
def tiny_ensemble(tmp_path_factory: pytest.TempPathFactory, tiny_data: SimpleNamespace,
                  tiny_model: SimpleNamespace) -> SimpleNamespace:
    """An ensemble folder (as `tune --ensemble 2` writes one): the tiny model, and a second
    one with 6 cells trained on the same data. dir, members (their own folders), train,
    test."""
    import shutil

    from deepar_cli.model import modelfolder

    other = _train(tmp_path_factory.mktemp("tiny_other"), {**TINY_HP, "num_cells": 6},
                   tiny_data.train, tiny_data.test)
    folder = tmp_path_factory.mktemp("tiny_ensemble") / "model"
    for k, member in enumerate((tiny_model.dir, other.dir)):
        shutil.copytree(member, folder / "members" / str(k))
    modelfolder.write_ensemble(folder, 2, {"ensemble": {"trials": [0, 1]}})
    return SimpleNamespace(dir=folder, members=[tiny_model.dir, other.dir],
                           train=tiny_data.train, test=tiny_data.test)
