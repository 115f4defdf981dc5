"""The Python API: SageMaker's DeepAR workflow from a notebook, on GluonTS datasets.

    import deepar_cli as dc

    train, test = dc.generate()          # the notebook's data, as GluonTS ListDatasets
    model = dc.train(train, {"time_freq": "H", "context_length": 72,
                             "prediction_length": 48, "epochs": 20}, "model", test=test)
    forecasts = dc.forecast(model, test)  # GluonTS SampleForecasts past each series' end
    result = dc.evaluate(model, test)     # the GluonTS Evaluator's figures

Each function does what its command does, through the same code, with the command's
defaults, and raises the same typed errors (deepar_cli.errors; each carries the command's
`exit_code`). A dataset is any iterable of GluonTS data entries (`start`, `target`, optional
`feat_static_cat` and `feat_dynamic_real`), such as a ListDataset; `train` and `evaluate`
take a channel's path as well. A bad entry raises DataError naming "dataset entry N"
(0-based) and the field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from deepar_cli import training
from deepar_cli.config.frequency import pandas_freq
from deepar_cli.config.hyperparameters import Hyperparameters, resolve
from deepar_cli.data import synthetic
from deepar_cli.data.channels import read_channel
from deepar_cli.data.dataset import entry_records, gluonts_fields, to_entry
from deepar_cli.data.records import Record
from deepar_cli.data.synthetic import SyntheticSpec
from deepar_cli.errors import (
    DataError,
    DeepARCliError,
    HyperparameterError,
    ModelError,
    OutputError,
    RequestError,
    UsageError,
)
from deepar_cli.evaluation import backtest
from deepar_cli.evaluation.backtest import Backtest
from deepar_cli.model import modelfolder
from deepar_cli.model.forecasting import DEFAULT_SEED
from deepar_cli.model.modelfolder import Model

if TYPE_CHECKING:
    from gluonts.model.forecast import SampleForecast

__all__ = [
    "generate", "read_dataset", "train", "load_model", "forecast", "evaluate",
    "SyntheticSpec", "Hyperparameters", "Model", "Backtest",
    "DeepARCliError", "UsageError", "DataError", "HyperparameterError", "ModelError",
    "OutputError", "RequestError",
]

DataEntry = Dict[str, Any]
Dataset = Iterable[Mapping[str, Any]]
PathLike = Union[str, "os.PathLike[str]"]
NOTEBOOK = SyntheticSpec()  # the notebook's recipe, `deepar-cli generate`'s defaults


def _list_dataset(records: Iterable[Record], time_freq: str) -> List[DataEntry]:
    from gluonts.dataset.common import ListDataset

    return ListDataset((gluonts_fields(r) for r in records), freq=pandas_freq(time_freq))


def generate(spec: SyntheticSpec = NOTEBOOK) -> Tuple[List[DataEntry], List[DataEntry]]:
    """The notebook's synthetic data as GluonTS ListDatasets (train, test): the values
    `deepar-cli generate` writes, as float32 targets, `start` a pandas Period of `spec.freq`,
    and `feat_static_cat` / `feat_dynamic_real` when the spec asks for them."""
    train_records, test_records = synthetic.generate(spec)
    return _list_dataset(train_records, spec.freq), _list_dataset(test_records, spec.freq)


def read_dataset(channel: PathLike, freq: str) -> List[DataEntry]:
    """A SageMaker channel (a file or folder) as a GluonTS ListDataset of frequency `freq`
    (SageMaker's `time_freq` spelling, e.g. "H", or pandas')."""
    return _list_dataset(read_channel(Path(channel)), freq)


def train(train: Union[PathLike, Dataset],
          hyperparameters: Union[Mapping[str, Any], Hyperparameters], model_dir: PathLike, *,
          test: Union[PathLike, Dataset, None] = None, seed: int = DEFAULT_SEED,
          average_epochs: int = 0) -> Model:
    """`deepar-cli train`: train on a dataset or channel with SageMaker's hyperparameters
    (names and values as a hyperparameters.json holds them), score `test` if given, write
    the model folder, and return it loaded. Figures are in `model.summary` (training.json).
    `average_epochs` as `train --average-epochs`."""
    hp = hyperparameters if isinstance(hyperparameters, Hyperparameters) else resolve(
        hyperparameters)
    training.train(train, hp, Path(model_dir), test_channel=test, seed=seed,
                   average_epochs=average_epochs)
    return load_model(model_dir)


def load_model(model_dir: PathLike) -> Model:
    """A model folder written by `train` (or `deepar-cli train`)."""
    return modelfolder.load(Path(model_dir))


def forecast(model: Model, dataset: Dataset, *, num_samples: Optional[int] = None,
             seed: int = DEFAULT_SEED) -> List[SampleForecast]:
    """`deepar-cli predict`: a GluonTS SampleForecast of the `prediction_length` points after
    the end of each series, in order; the same samples as `predict` for the same series and
    seed (`num_samples` defaults to predict's, 100). `feat_dynamic_real` must reach
    `prediction_length` points past the target."""
    from deepar_cli.inference.protocol import InferenceConfig
    from deepar_cli.model.forecasting import sample_paths

    hp, features = model.hp, model.features
    records = entry_records(dataset, extra_feat_length=hp.prediction_length, features=features)
    entries = (to_entry(record, hp.freq, features) for record in records)
    samples = InferenceConfig().num_samples if num_samples is None else num_samples
    return list(sample_paths(model.predictor, entries, num_samples=samples, seed=seed))


def evaluate(model: Model, dataset: Union[PathLike, Dataset], *,
             quantiles: Optional[Sequence[float]] = None, num_samples: Optional[int] = None,
             windows: int = 1, seed: int = DEFAULT_SEED) -> Backtest:
    """`deepar-cli evaluate` without the files: forecast the last `prediction_length` points
    of each full series (`windows` rolling windows back) and score them with the GluonTS
    Evaluator, beside a seasonal-naive forecast. Defaults: the model's `test_quantiles` and
    `num_eval_samples`."""
    return backtest.evaluate_source(model, dataset, seed=seed, quantiles=quantiles,
                                      num_samples=num_samples, windows=windows)
