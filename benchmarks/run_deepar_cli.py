"""One deepar-cli round, timed like the peer: train, forecast the test set, score it.

Prints one JSON object with the peer's keys so bench.py can set them side by side. The
timed forecast is the one forecast path every command takes: sample paths, then the
mean and SageMaker's default quantiles 0.1 ... 0.9.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deepar_cli.threads import use_cores

TRAINING_ENV = dict(os.environ)  # as the user set it, before this process sizes its pools
use_cores()  # as `predict` starts: before numpy and MXNet load and size their pools

from deepar_cli.config import hyperparameters  # noqa: E402
from deepar_cli.data.channels import read_channel  # noqa: E402
from deepar_cli.data.dataset import to_entries  # noqa: E402
from deepar_cli.model import modelfolder  # noqa: E402
from deepar_cli.model.forecasting import hold_out, sample_paths, summarize  # noqa: E402

LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--hyperparameters", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="Instead of the hyperparameters' epochs.")
    parser.add_argument("--plain", action="store_true",
                        help="Without deepar_cli.backends.mxnet.acceleration: GluonTS's own LSTM "
                        "and decoder.")
    args = parser.parse_args()

    hp = hyperparameters.load(args.hyperparameters, {"epochs": args.epochs})
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        # `deepar-cli train` in a process of its own, whose pools are sized for training.
        subprocess.run([sys.executable, "-m", "deepar_cli", "train", "--train", str(args.train),
                        "--test", str(args.test), "--hyperparameters", str(args.hyperparameters),
                        "--model-dir", str(model_dir), "--seed", str(args.seed), "--quiet",
                        "--rnn", "gluonts" if args.plain else "fused",
                        *(["--epochs", str(args.epochs)] if args.epochs else [])],
                       check=True, stdout=subprocess.DEVNULL, env=TRAINING_ENV)
        summary = json.loads((model_dir / "training.json").read_text())
        model = modelfolder.load(model_dir, accelerated=not args.plain)
        entries = [hold_out(e, hp.prediction_length)
                   for e in to_entries(read_channel(args.test), hp.freq, model.features)]
        tic = time.perf_counter()
        for forecast in sample_paths(model.predictor, entries, num_samples=100, seed=args.seed):
            summarize(forecast.samples, LEVELS)
        predict_s = time.perf_counter() - tic
    print(json.dumps({
        "backend": "deepar-cli (plain)" if args.plain else "deepar-cli",
        "train_seconds": summary["train_seconds"],
        "train_samples_per_second": summary["train_samples_per_second"],
        "epochs_run": len(summary["history"]),
        "batches_per_epoch": summary["batches_per_epoch"],
        "predict_seconds": predict_s,
        "series": len(entries),
        "num_samples": 100,
        "RMSE": summary["test_metrics"]["RMSE"],
        "mean_wQuantileLoss": summary["test_metrics"]["mean_wQuantileLoss"],
        "peak_rss_mb": max(resource.getrusage(who).ru_maxrss for who in (
            resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024,  # training's process too
    }))


if __name__ == "__main__":
    main()
