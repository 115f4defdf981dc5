"""deepar-cli: Amazon SageMaker's DeepAR workflow, done locally on GluonTS.

The Python API (deepar_cli.api) is re-exported here, imported on first use, so that
`import deepar_cli` stays light and leaves the environment alone. It does make a later
`import mxnet` skip what a forecast never uses (see
deepar_cli.backends.mxnet.mxnet_import), which takes
0.9 s off every command's start.
"""

from typing import TYPE_CHECKING, Any

from deepar_cli.backends.mxnet import mxnet_import

mxnet_import.install()

__version__ = "0.1.0"

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
