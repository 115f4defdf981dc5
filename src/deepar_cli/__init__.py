"""deepar-cli: Amazon SageMaker's DeepAR workflow, done locally on GluonTS.

The Python API (deepar_cli.api) is re-exported here, imported on first use, so that
`import deepar_cli` stays light and leaves the environment alone.

The package is built in layers, each importing only the layers below it (a test checks):

    foundation   errors, atomic, jsontext, interrupts, threads, version
    config       SageMaker's hyperparameters, the tuning job config, time frequencies
    data         records, channels, GluonTS entries, stats, the notebook's generator
    backends     the backend interface and registry; mxnet/, the only code that imports
                 a deep-learning framework
    model        the model folder, ensembles, the one forecast path, means and quantiles
    evaluation   backtests, the Evaluator, plots
    training     `train`: a training job on a backend, written as a model folder
    inference    SageMaker's request/response protocol, batch transform, engines
    serve, tune  the endpoint; the tuning job
    api          this package's Python API
    cli          the commands
"""

from typing import TYPE_CHECKING, Any

from deepar_cli.version import __version__ as __version__

__all__ = [
    "generate", "read_dataset", "train", "load_model", "forecast", "evaluate",
    "SyntheticSpec", "Hyperparameters", "Model", "Backtest",
    "DeepARCliError", "UsageError", "DataError", "HyperparameterError", "ModelError",
    "OutputError", "RequestError",
]

if TYPE_CHECKING:
    from deepar_cli.api import (
        Backtest,
        DataError,
        DeepARCliError,
        HyperparameterError,
        Hyperparameters,
        Model,
        ModelError,
        OutputError,
        RequestError,
        SyntheticSpec,
        UsageError,
        evaluate,
        forecast,
        generate,
        load_model,
        read_dataset,
        train,
    )


def __getattr__(name: str) -> Any:
    if name in __all__:
        from deepar_cli import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
