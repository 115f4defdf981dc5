"""A model folder is data: loading one never imports or calls anything it names.

GluonTS's own loader (`Predictor.deserialize`) decodes `predictor/*.json` into whatever
classes they name; deepar-cli rebuilds the network from the hyperparameters and reads only
the weights. Each tampered folder here either loads the real model or is refused with
ModelError, and no payload runs.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import numpy as np
import pytest

from deepar_cli.backends.mxnet.backend import WEIGHTS
from deepar_cli.errors import ModelError
from deepar_cli.model import modelfolder
from deepar_cli.model.forecasting import sample_paths


class _Opens:
    """Unpickling this creates the file `path` (a stand-in for any code a pickle runs)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Tuple[Any, ...]:
        return (open, (self.path, "w"))


def _payloads(canary: Path, victim: Path, pickled: Path) -> List[Any]:
    """GluonTS serde values that, decoded, create `canary` or delete `victim`."""
    return [
        {"__kind__": "instance", "class": "builtins.open", "args": [str(canary), "w"]},
        {"__kind__": "instance", "class": "builtins.eval",
         "args": [f"open({str(canary)!r}, 'w')"]},
        {"__kind__": "instance", "class": "shutil.rmtree", "args": [str(victim)]},
        # Allowed by GluonTS's decoder: a time feature that deletes `victim` when called.
        {"__kind__": "instance", "class": "functools.partial", "args": [
            {"__kind__": "instance", "class": "builtins.getattr",
             "args": [{"__kind__": "type", "class": "shutil"}, "rmtree"]}, str(victim)]},
        {"__kind__": "instance", "class": "numpy.load", "args": [str(pickled)],
         "kwargs": {"allow_pickle": True}},
        {"__kind__": "type", "class": "canary_module.Anything"},
    ]


@pytest.fixture
def hostile(tmp_path: Path, tiny_model: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A copy of the tiny model to tamper with, a canary that must not appear, a victim
    folder that must not vanish, a shipped pickle and an importable module that would
    create the canary."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_model.dir, folder)
    canary, victim = tmp_path / "canary", tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    pickled = folder / "predictor" / "extra.npy"
    pickled.write_bytes(pickle.dumps(_Opens(str(canary))))
    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / "canary_module.py").write_text(
        f"open({str(canary)!r}, 'w').close()\nAnything = object\n")
    monkeypatch.syspath_prepend(str(tmp_path / "modules"))

    class Hostile:
        def __init__(self) -> None:
            self.folder, self.canary, self.victim = folder, canary, victim
            self.payloads = _payloads(canary, victim, pickled)
            self.expected = _forecast(tiny_model.model)

        def harmless(self) -> None:
            assert not canary.exists(), "a payload ran"
            assert (victim / "keep.txt").read_text() == "mine", "a payload deleted files"

        def loads_real_model_or_refuses(self) -> None:
            try:
                model = modelfolder.load(folder)
            except ModelError as exc:
                assert "\n" not in str(exc)
            else:
                np.testing.assert_array_equal(_forecast(model), self.expected)
            self.harmless()

    return Hostile()


def _forecast(model: Any) -> np.ndarray:
    entry = {"start": model_start(), "target": np.linspace(0, 1, 40, dtype=np.float32)}
    [forecast] = sample_paths(model.predictor, [entry], num_samples=4, seed=3)
    return forecast.samples


def model_start() -> Any:
    import pandas as pd

    return pd.Period("2016-01-01 00:00", freq="h")


def _leaves(value: Any, path: Tuple[Any, ...] = ()) -> Iterator[Tuple[Any, ...]]:
    """Every position in a JSON document, containers and leaves."""
    if path:
        yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))


def _planted(document: Any, path: Tuple[Any, ...], payload: Any) -> Any:
    copy = json.loads(json.dumps(document))
    place = copy
    for key in path[:-1]:
        place = place[key]
    place[path[-1]] = payload
    return copy


def test_gluontss_own_loader_runs_the_planted_payload(hostile: Any) -> None:
    """The tampering is real: plain GluonTS imports the module a planted value names."""
    from gluonts.model.predictor import Predictor

    params = hostile.folder / "predictor" / "parameters.json"
    params.write_text(json.dumps(_planted(json.loads(params.read_text()), ("batch_size",),
                                          hostile.payloads[-1])))
    Predictor.deserialize(hostile.folder / "predictor")
    assert hostile.canary.exists()


KINDS = ["open", "eval", "rmtree", "getattr", "unpickle", "import"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("file", ["parameters.json", "input_transform.json",
                                  "prediction_net-network.json"])
def test_planted_payloads_in_gluonts_files_do_not_run(hostile: Any, kind: str,
                                                      file: str) -> None:
    payload = hostile.payloads[KINDS.index(kind)]
    path = hostile.folder / "predictor" / file
    document = json.loads(path.read_text())
    path.write_text(json.dumps({"__kind__": "instance", "class": "builtins.dict",
                                "kwargs": {"payload": payload, "original": document}}))
    hostile.loads_real_model_or_refuses()


def test_an_importing_gluonts_config_does_not_import(hostile: Any) -> None:
    (hostile.folder / "predictor" / "gluonts-config.json").write_text(json.dumps(
        {"model": "0.17.0", "gluonts": "0.17.0", "type": "canary_module.Anything"}))
    hostile.loads_real_model_or_refuses()


def test_a_payload_in_each_json_value_of_a_model_folder_never_runs(hostile: Any) -> None:
    """The fuzz: every position of every JSON file of a real model folder in turn holds a
    payload; each load gives the real model or ModelError, and nothing runs."""
    files = sorted(hostile.folder.rglob("*.json"))
    originals = {path: path.read_text() for path in files}
    planted = 0
    for path in files:
        document = json.loads(originals[path])
        for position in _leaves(document):
            payload = hostile.payloads[planted % len(hostile.payloads)]
            path.write_text(json.dumps(_planted(document, position, payload)))
            hostile.loads_real_model_or_refuses()
            planted += 1
        path.write_text(originals[path])
    assert planted > 100


def test_a_weights_file_that_does_not_fit_is_refused_in_one_line(hostile: Any) -> None:
    weights = hostile.folder / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelError) as info:
        modelfolder.load(hostile.folder)
    assert str(info.value) == (f"{hostile.folder}: the weights in "
                               "predictor/prediction_net-0000.params cannot be loaded "
                               "(Invalid NDArray file format)")


def test_a_weights_file_linked_from_outside_the_folder_is_refused(hostile: Any,
                                                                  tmp_path: Path) -> None:
    weights = hostile.folder / WEIGHTS
    outside = tmp_path / "outside.params"
    shutil.move(weights, outside)
    weights.symlink_to(outside)
    with pytest.raises(ModelError) as info:
        modelfolder.load(hostile.folder)
    assert str(info.value) == (f"{hostile.folder}: the weights file "
                               "'predictor/prediction_net-0000.params' lies outside the "
                               "model folder")


def _ensemble_of(folder: Path, members: List[str]) -> None:
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**meta, "ensemble": members}))


@pytest.mark.parametrize("member", ["../victim", "/etc", ".", "members/..", "members/0/../../.."])
def test_an_ensemble_member_outside_its_folder_is_refused(tmp_path: Path, tiny_model: Any,
                                                          member: str) -> None:
    folder = tmp_path / "ensemble"
    shutil.copytree(tiny_model.dir, folder / "members" / "0")
    shutil.copytree(tiny_model.dir, tmp_path / "victim")
    for name in modelfolder.FILES:
        shutil.copy(tiny_model.dir / name, folder / name)
    _ensemble_of(folder, ["members/0", member])
    with pytest.raises(ModelError) as info:
        modelfolder.load(folder)
    assert str(info.value) == (f"{folder}: ensemble member {member!r} lies outside the "
                               "model folder")


def test_an_ensemble_member_listed_twice_is_refused(tiny_ensemble: Any, tmp_path: Path
                                                    ) -> None:
    folder = tmp_path / "ensemble"
    shutil.copytree(tiny_ensemble.dir, folder)
    _ensemble_of(folder, ["members/0", "members/1", "members/./0"])
    with pytest.raises(ModelError) as info:
        modelfolder.load(folder)
    assert str(info.value) == f"{folder}: ensemble member 'members/./0' is listed twice"


def test_the_rebuilt_model_forecasts_as_gluontss_own_loader(tiny_feature_model: Any) -> None:
    """Keeping the folder loadable by plain GluonTS: both loaders give the same network."""
    from gluonts.model.predictor import Predictor

    own = Predictor.deserialize(tiny_feature_model.dir / "predictor")
    rebuilt = modelfolder.load(tiny_feature_model.dir, accelerated=False).predictor.gluonts
    assert own.prediction_net.__init_args__.keys() == rebuilt.prediction_net.__init_args__.keys()
    for (name, a), b in zip(own.prediction_net.collect_params().items(),
                            rebuilt.prediction_net.collect_params().values()):
        np.testing.assert_array_equal(a.data().asnumpy(), b.data().asnumpy(), err_msg=name)
