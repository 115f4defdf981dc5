"""The model folder: a backend's trained network plus what deepar-cli knows about it.

    hyperparameters.json  the resolved SageMaker hyperparameters
    model.json            the backend that wrote it ("backend"), features used
                          (cardinality, num_dynamic_feat) and library versions
    training.json         dataset statistics, loss per epoch, final loss, test metrics
    ...                   the backend's own files (`Backend.files`): the MXNet backend's
                          predictor/, GluonTS `Predictor.serialize` output

An ensemble folder (`tune --ensemble K`) holds, instead of the backend's files, its members
as model folders `members/0` ... `members/K-1` (best first), listed in model.json's
"ensemble"; its hyperparameters.json is the first member's. It forecasts by mixing the
members' quantiles (`forecasting.Ensemble`), through every command. model.json's "spread",
where tune calibrated the model, scales the forecasts' spread about their median; its
"weights", where tune's ensemble selection chose them, weigh the members in the average.

A model folder is data, safe to load from anyone: JSON read as values, never decoded into
objects, and weights in a format that cannot execute code (the MXNet backend's NDArray
files). Members lie inside their ensemble's folder.
"""

from __future__ import annotations

import json
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Tuple

from deepar_cli import jsontext
from deepar_cli.atomic import prepare_dir, refuse_foreign_dir, refuse_overlap, write_json
from deepar_cli.backends import BACKENDS, UnknownBackend, get_backend
from deepar_cli.backends.base import Backend, Network, inside
from deepar_cli.config.hyperparameters import Hyperparameters, resolve
from deepar_cli.data.dataset import Features
from deepar_cli.errors import HyperparameterError, ModelError
from deepar_cli.model.forecasting import Ensemble, Forecaster
from deepar_cli.version import __version__

FORMAT_VERSION = 1
FILES = ("hyperparameters.json", "model.json", "training.json")


@dataclass
class Model:
    """A loaded model folder."""

    path: Path
    # The backend's network, or a forecasting.Ensemble (several members, or a calibrated
    # spread)
    predictor: Forecaster
    hp: Hyperparameters
    features: Features
    summary: Dict[str, Any]


def _entries() -> FrozenSet[str]:
    """Everything deepar-cli writes into a model folder, whichever backend wrote it
    (evaluate's default output included)."""
    return frozenset({*FILES, "members", "evaluation",
                      *(name for backend in BACKENDS for name in get_backend(backend).files)})


def prepare(folder: Path, inputs: Sequence[Any]) -> None:
    """Check, before any work, that a model folder may be written at `folder`: it is not,
    holds no and lies in no input channel, and it is new, empty or a model folder, so
    replacing it loses nothing deepar-cli did not write. Raises UsageError or OutputError."""
    prepare_dir(folder, replace=True)
    refuse_overlap(folder, inputs, "--model-dir", replaced=True)
    refuse_foreign_dir(folder, _entries(), "model folder")


def write(folder: Path, backend: Backend, network: Network, hp: Hyperparameters,
          features: Features, summary: Dict[str, Any]) -> None:
    """Write every file of a model folder into `folder` (the caller makes it atomic);
    WeightsNotWritten where the OS refused the backend's write."""
    network.write(folder)
    write_json(folder / "hyperparameters.json", hp.as_dict())
    versions = {"deepar_cli": __version__, **backend.versions(),
                "python": platform.python_version()}
    write_json(folder / "model.json", {"format_version": FORMAT_VERSION,
                                       "backend": backend.name, **features.as_dict(),
                                       "versions": versions})
    write_summary(folder, summary)


def write_summary(folder: Path, summary: Dict[str, Any]) -> None:
    write_json(folder / "training.json", summary)


def write_ensemble(folder: Path, count: int, summary: Dict[str, Any],
                   weights: Optional[Sequence[float]] = None) -> None:
    """Make `folder`, whose `members/0` ... `members/<count-1>` are model folders (best
    first), an ensemble folder (the caller makes it atomic); `weights`, one a member, weigh
    them in the average (None: equally)."""
    names = [f"members/{k}" for k in range(count)]
    shutil.copy(folder / names[0] / "hyperparameters.json", folder / "hyperparameters.json")
    meta = json.loads((folder / names[0] / "model.json").read_text())
    weighed = {} if weights is None else {"weights": list(weights)}
    write_json(folder / "model.json", {**meta, "ensemble": names, **weighed})
    write_summary(folder, summary)


def write_spread(folder: Path, spread: float) -> None:
    """Record tune's calibration in the model folder `folder` (the caller makes it atomic)."""
    meta = json.loads((folder / "model.json").read_text())
    write_json(folder / "model.json", {**meta, "spread": spread})


def _spread(meta: Dict[str, Any]) -> float:
    spread = meta.get("spread", 1.0)
    if isinstance(spread, bool) or not isinstance(spread, (int, float)) or not (
            0 < spread < float("inf")):
        raise ValueError(f'"spread" must be a positive number, got {spread!r}')
    return float(spread)


def _weights(meta: Dict[str, Any], members: List[str]) -> Optional[Tuple[float, ...]]:
    weights = meta.get("weights")
    if weights is None:
        return None
    if not (isinstance(weights, list) and len(weights) == len(members) and all(
            not isinstance(w, bool) and isinstance(w, (int, float)) and 0 < w < float("inf")
            for w in weights)):
        raise ValueError(f'"weights" must be a positive number for each of the '
                         f'{len(members)} members, got {weights!r}')
    return tuple(float(w) for w in weights)


def _features(meta: Dict[str, Any]) -> Features:
    cardinality, dynamic = meta["cardinality"], meta["num_dynamic_feat"]
    if cardinality is not None and not (isinstance(cardinality, list) and cardinality and all(
            _count(c) and c > 0 for c in cardinality)):
        raise ValueError(f'"cardinality" must be null or a list of positive integers, got '
                         f"{cardinality!r}")
    if not (_count(dynamic) and dynamic >= 0):
        raise ValueError(f'"num_dynamic_feat" must be a non-negative integer, got {dynamic!r}')
    return Features(cardinality, dynamic)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _backend_name(meta: Dict[str, Any]) -> Optional[str]:
    name = meta.get("backend")
    if name is not None and not isinstance(name, str):
        raise ValueError(f'"backend" must be a backend\'s name, got {jsontext.show(name)}')
    return name


def _backend(folder: Path, name: Optional[str]) -> Backend:
    """The backend model.json names; ModelError for none, or one this deepar-cli lacks."""
    if name is None:
        raise ModelError(f'{folder}: model.json names no "backend" (train the model again '
                         "with this deepar-cli)")
    try:
        return get_backend(name)
    except UnknownBackend:
        raise ModelError(f"{folder}: model.json names the backend {jsontext.show(name)}, "
                         f"which this deepar-cli does not have (it has "
                         f"{', '.join(BACKENDS)})") from None


def load(folder: Path, *, accelerated: bool = True) -> Model:
    """Load a model folder, or raise ModelError naming what is missing or broken.

    A model folder is data: model.json names the backend, which rebuilds the network from
    hyperparameters.json and model.json and reads only its weights from the folder.
    Nothing the folder names is imported or called (the MXNet backend's GluonTS files in
    `predictor/` are written for plain GluonTS and never read here).

    `accelerated` gives the backend's faster sampling network, where it has one (same
    parameters, same forecasts, several times faster: the MXNet backend's
    deepar_cli.backends.mxnet.acceleration); False keeps GluonTS's own.
    """
    if not folder.is_dir():
        raise ModelError(f"{folder}: no such model folder (train one with `deepar-cli train`)")
    missing = [name for name in FILES if not (folder / name).exists()]
    if missing:
        raise ModelError(f"{folder}: not a deepar-cli model folder ({missing[0]} is missing)")
    try:
        hp = resolve(jsontext.loads((folder / "hyperparameters.json").read_text()))
        meta = jsontext.loads((folder / "model.json").read_text())
        summary = jsontext.loads((folder / "training.json").read_text())
        features = _features(meta)
        backend_name = _backend_name(meta)
        members = meta.get("ensemble")
        if members is not None and not (isinstance(members, list) and members
                                        and all(isinstance(m, str) for m in members)):
            raise ValueError('"ensemble" must list the member folders')
        spread = _spread(meta)
        weights = None if members is None else _weights(meta, members)
    except (ValueError, KeyError, TypeError, HyperparameterError) as exc:
        raise ModelError(f"{folder}: model files are damaged ({exc})") from None
    backend = _backend(folder, backend_name)
    if members is not None:
        return Model(folder, Ensemble(_members(folder, members, hp, features, accelerated),
                                      spread, weights), hp, features, summary)
    predictor: Forecaster = backend.load(folder, hp, features, accelerated=accelerated)
    if spread != 1.0:
        predictor = Ensemble((predictor,), spread)
    return Model(folder, predictor, hp, features, summary)


def _members(folder: Path, names: List[str], hp: Hyperparameters, features: Features,
             accelerated: bool) -> Tuple[Network, ...]:
    """The members of an ensemble folder, each a folder inside it, listed once, and checked
    to forecast the same thing."""
    members: List[Network] = []
    seen = set()
    for name in names:
        path = inside(folder, name, "ensemble member")
        if path in seen:
            raise ModelError(f"{folder}: ensemble member {name!r} is listed twice")
        seen.add(path)
        member = load(folder / name, accelerated=accelerated)
        if isinstance(member.predictor, Ensemble):
            raise ModelError(f"{folder / name}: an ensemble member cannot be an ensemble "
                             "or calibrated")
        for field in ("prediction_length", "freq"):
            if getattr(member.hp, field) != getattr(hp, field):
                raise ModelError(f"{folder / name}: {field} {getattr(member.hp, field)!r} "
                                 f"differs from the ensemble's {getattr(hp, field)!r}")
        if member.features != features:
            raise ModelError(f"{folder / name}: trained on other features than the ensemble")
        members.append(member.predictor)
    return tuple(members)
