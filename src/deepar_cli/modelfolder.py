"""The model folder: a serialized GluonTS predictor plus what deepar-cli knows about it.

    predictor/            GluonTS `Predictor.serialize` output (loadable by plain GluonTS)
    hyperparameters.json  the resolved SageMaker hyperparameters
    model.json            features used (cardinality, num_dynamic_feat) and library versions
    training.json         dataset statistics, loss per epoch, final loss, test metrics

An ensemble folder (`tune --ensemble K`) holds, instead of `predictor/`, its members as
model folders `members/0` ... `members/K-1` (best first), listed in model.json's
"ensemble"; its hyperparameters.json is the first member's. It forecasts by mixing the
members' sample paths (`forecasting.Ensemble`), through every command.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List

from deepar_cli import __version__
from deepar_cli.atomic import write_json
from deepar_cli.dataset import Features
from deepar_cli.errors import HyperparameterError, ModelError
from deepar_cli.hyperparameters import Hyperparameters, resolve

FORMAT_VERSION = 1
FILES = ("hyperparameters.json", "model.json", "training.json")


@dataclass
class Model:
    """A loaded model folder."""

    path: Path
    predictor: Any  # a GluonTS RepresentableBlockPredictor, or a forecasting.Ensemble
    hp: Hyperparameters
    features: Features
    summary: Dict[str, Any]


def _versions() -> Dict[str, str]:
    import gluonts
    import mxnet

    return {"deepar_cli": __version__, "gluonts": gluonts.__version__,
            "mxnet": mxnet.__version__, "python": platform.python_version()}


def write(folder: Path, predictor: Any, hp: Hyperparameters, features: Features,
          summary: Dict[str, Any]) -> None:
    """Write every file of a model folder into `folder` (the caller makes it atomic)."""
    predictor_dir = folder / "predictor"
    predictor_dir.mkdir(parents=True, exist_ok=True)
    # GluonTS warns that the network structure is pickled per version; we record versions.
    logging.getLogger().disabled = True
    try:
        predictor.serialize(predictor_dir)
    finally:
        logging.getLogger().disabled = False
    write_json(folder / "hyperparameters.json", hp.as_dict())
    write_json(folder / "model.json", {"format_version": FORMAT_VERSION, **features.as_dict(),
                                       "versions": _versions()})
    write_summary(folder, summary)


def write_summary(folder: Path, summary: Dict[str, Any]) -> None:
    write_json(folder / "training.json", summary)


def write_ensemble(folder: Path, count: int, summary: Dict[str, Any]) -> None:
    """Make `folder`, whose `members/0` ... `members/<count-1>` are model folders (best
    first), an ensemble folder (the caller makes it atomic)."""
    names = [f"members/{k}" for k in range(count)]
    shutil.copy(folder / names[0] / "hyperparameters.json", folder / "hyperparameters.json")
    meta = json.loads((folder / names[0] / "model.json").read_text())
    write_json(folder / "model.json", {**meta, "ensemble": names})
    write_summary(folder, summary)


def load(folder: Path, *, accelerated: bool = True) -> Model:
    """Load a model folder, or raise ModelError naming what is missing or broken.

    `accelerated` swaps in deepar_cli.acceleration's sampling network (same parameters,
    same forecasts, several times faster); False keeps GluonTS's as deserialized.
    """
    if not folder.is_dir():
        raise ModelError(f"{folder}: no such model folder (train one with `deepar-cli train`)")
    missing = [name for name in FILES if not (folder / name).exists()]
    if missing:
        raise ModelError(f"{folder}: not a deepar-cli model folder ({missing[0]} is missing)")
    try:
        hp = resolve(json.loads((folder / "hyperparameters.json").read_text()))
        meta = json.loads((folder / "model.json").read_text())
        summary = json.loads((folder / "training.json").read_text())
        features = Features(meta["cardinality"], int(meta["num_dynamic_feat"]))
        members = meta.get("ensemble")
        if members is not None and not (isinstance(members, list) and members
                                        and all(isinstance(m, str) for m in members)):
            raise ValueError('"ensemble" must list the member folders')
    except (ValueError, KeyError, TypeError, HyperparameterError) as exc:
        raise ModelError(f"{folder}: model files are damaged ({exc})") from None
    if members is not None:
        return Model(folder, _ensemble(folder, members, hp, features, accelerated), hp,
                     features, summary)
    if not (folder / "predictor").exists():
        raise ModelError(f"{folder}: not a deepar-cli model folder (predictor is missing)")
    from gluonts.model.predictor import Predictor

    try:
        predictor = Predictor.deserialize(folder / "predictor")
    except Exception as exc:  # GluonTS raises many kinds for a bad folder
        raise ModelError(f"{folder}: the GluonTS predictor cannot be loaded ({exc})") from None
    if accelerated:
        from deepar_cli.acceleration import accelerate

        accelerate(predictor)
    return Model(folder, predictor, hp, features, summary)


def _ensemble(folder: Path, names: List[str], hp: Hyperparameters, features: Features,
              accelerated: bool) -> Any:
    """The members of an ensemble folder, checked to forecast the same thing."""
    from deepar_cli.forecasting import Ensemble

    members = []
    for name in names:
        member = load(folder / name, accelerated=accelerated)
        if isinstance(member.predictor, Ensemble):
            raise ModelError(f"{folder / name}: an ensemble member cannot be an ensemble")
        for field in ("prediction_length", "freq"):
            if getattr(member.hp, field) != getattr(hp, field):
                raise ModelError(f"{folder / name}: {field} {getattr(member.hp, field)!r} "
                                 f"differs from the ensemble's {getattr(hp, field)!r}")
        if member.features != features:
            raise ModelError(f"{folder / name}: trained on other features than the ensemble")
        members.append(member.predictor)
    return Ensemble(tuple(members))
