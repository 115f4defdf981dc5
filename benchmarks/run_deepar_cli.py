"""One deepar-cli round, timed like the peer: train, forecast the test set, score it.

Prints one JSON object with the peer's keys so bench.py can set them side by side. The
timed forecast is the one forecast path every command takes: sample paths, then the
mean and SageMaker's default quantiles 0.1 ... 0.9.
"""

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from deepar_cli.threads import use_cores

use_cores()  # as a command starts: before numpy and MXNet load and size their pools

from deepar_cli import hyperparameters, modelfolder  # noqa: E402
from deepar_cli.channels import read_channel  # noqa: E402
from deepar_cli.dataset import to_entries  # noqa: E402
from deepar_cli.forecasting import hold_out, sample_paths, summarize  # noqa: E402
from deepar_cli.training import train  # noqa: E402

LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--hyperparameters", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="Instead of the hyperparameters' epochs.")
    parser.add_argument("--plain", action="store_true",
                        help="Without deepar_cli.acceleration: GluonTS's own LSTM and decoder.")
    args = parser.parse_args()

    hp = hyperparameters.load(args.hyperparameters, {"epochs": args.epochs})
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        summary = train(args.train, hp, model_dir, test_channel=args.test, seed=args.seed,
                        rnn="gluonts" if args.plain else "fused")
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
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
