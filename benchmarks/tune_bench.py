"""What `deepar-cli tune` buys: a tune without a test channel (its objective held out of the
train channel), then the tuned model and fixed hyperparameters
both scored on the untouched test channel, beside a seasonal-naive forecast.

    python benchmarks/tune_bench.py [--dataset synthetic] [--trials 20] [--parallel 1]
        [--holdout-windows 1] [--final-model selection] [--seeds 0,1,2]

synthetic: `deepar-cli generate`'s defaults (the notebook's 200 series), tuned with the
default ranges around the notebook's other hyperparameters, against data/hyperparameters.json.
co2 (weekly Mauna Loa CO2, 1958-2001, with gaps) and elnino (monthly Pacific sea
temperatures, 1950-2010): one real series each from statsmodels' offline data sets
(pip install 'statsmodels<0.15', which keeps numpy < 1.24), tuned around SageMaker's defaults
(20 epochs, batches of 32), against those with context_length = prediction_length.
Each seed is the tune's RandomSeed and every training seed; when the model is an ensemble,
its first member (the most weighed trial) is scored beside it as the single best trial.
Each seed's figures go to benchmarks/results/tune_bench-<name>-seed<N>.json as it ends
(`--reuse` skips seeds already there, so seeds can run in parallel processes and be
combined), their medians to tune_bench-<name>.json.

The results files made with options tune no longer has (--final-model trials+refit,
--ensemble, --bag, --no-calibrate, --average-epochs) were written by this script at commit
f92eeae, which still has them; what they showed, and why those options left, is in
docs/experiments/2026-12-04-tune-options.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

from deepar_cli.config import tuning_config
from deepar_cli.config.hyperparameters import read_file, resolve
from deepar_cli.data.channels import write_records
from deepar_cli.data.records import Record
from deepar_cli.evaluation import backtest
from deepar_cli.model import modelfolder
from deepar_cli.training import train
from deepar_cli.tune import study
from deepar_cli.tune.reporting import Reporter

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "data" / "hyperparameters.json"
FIGURES = ("RMSE", "mean_wQuantileLoss", "Coverage[0.1]", "Coverage[0.5]", "Coverage[0.9]")
Dataset = Tuple[List[Record], Dict[str, Any], Dict[str, Any]]  # test records, static, fixed


def synthetic() -> Dataset:
    from deepar_cli.data.synthetic import SyntheticSpec, generate

    _, test = generate(SyntheticSpec())
    fixed = read_file(NOTEBOOK)
    tuned = set(tuning_config.load(None, {"prediction_length": "48"}, "-").names)
    return test, {k: v for k, v in fixed.items() if k not in tuned}, fixed


def _one_series(start: str, values: np.ndarray, freq: str, horizon: int) -> Dataset:
    static = {"time_freq": freq, "prediction_length": str(horizon), "epochs": "20",
              "mini_batch_size": "32", "early_stopping_patience": "5"}
    return [Record(start, values.astype(float))], static, {**static,
                                                           "context_length": str(horizon)}


def co2() -> Dataset:
    from statsmodels.datasets import co2 as data

    frame = data.load_pandas().data
    return _one_series(str(frame.index[0].date()), frame["co2"].to_numpy(), "W", 52)


def elnino() -> Dataset:
    from statsmodels.datasets import elnino as data

    frame = data.load_pandas().data
    months = frame.drop(columns="YEAR").to_numpy().ravel()
    return _one_series(f"{int(frame['YEAR'].iloc[0])}-01-01", months, "M", 12)


DATASETS: Dict[str, Callable[[], Dataset]] = {"synthetic": synthetic, "co2": co2,
                                              "elnino": elnino}


def score(model_dir: Path, test: Path, seed: int) -> Dict[str, Dict[str, float]]:
    result = backtest.evaluate_channel(modelfolder.load(model_dir), test,
                                         model_dir / "evaluation", seed=seed)
    return {"model": {k: result.overall[k] for k in FIGURES},
            "seasonal_naive": {k: result.baseline[k] for k in FIGURES}}


def one_seed(args: argparse.Namespace, seed: int) -> Dict[str, Any]:
    folder = args.work_dir / _name(args) / f"seed{seed}"
    test_records, static, fixed = DATASETS[args.dataset]()
    horizon = int(static["prediction_length"])
    train_records = [Record(r.start, r.target[:-horizon]) for r in test_records]
    write_records(folder / "train.json", train_records)
    write_records(folder / "test.json", test_records)
    (folder / "static.json").write_text(json.dumps(static))
    # The default ranges, with a RandomSeed so that a rerun draws the same trials.
    (folder / "tuning.json").write_text(json.dumps({
        "ParameterRanges": tuning_config.default_ranges(static), "RandomSeed": seed}))

    tic = time.perf_counter()
    result = study.tune(folder / "train.json", folder / "static.json", folder / "tune",
                        config_file=folder / "tuning.json", max_trials=args.trials,
                        max_parallel=args.parallel, holdout_windows=args.holdout_windows,
                        final_model=args.final_model, seed=seed, log=Reporter())
    tune_seconds = time.perf_counter() - tic
    tic = time.perf_counter()
    train(folder / "train.json", resolve(fixed), folder / "fixed", seed=seed)
    fixed_seconds = time.perf_counter() - tic

    model = folder / "tune" / "model"
    members = model / "members"
    tuned = score(model, folder / "test.json", seed)
    fixed_scores = score(folder / "fixed", folder / "test.json", seed)
    return {
        "seed": seed, "series": len(test_records), "prediction_length": horizon,
        "holdout_windows": args.holdout_windows,
        "trials": result.counts, "tune_seconds": round(tune_seconds, 1),
        "fixed_train_seconds": round(fixed_seconds, 1), "best": result.best,
        "ensemble": json.loads((folder / "tune" / "tuning.json").read_text())["model"],
        "fixed_hyperparameters": fixed, "tuned": tuned["model"],
        "single_best": score(members / "0", folder / "test.json", seed)["model"]
        if members.is_dir() else tuned["model"],
        "fixed": fixed_scores["model"], "seasonal_naive": fixed_scores["seasonal_naive"],
    }


def _name(args: argparse.Namespace) -> str:
    """The data set, the holdout windows when more than one, the trials when not 20, -cal
    (every tune calibrates now; the first results did not) and the final model: the names
    of the selection results in benchmarks/results, and none of the earlier ones'."""
    windows = f"-w{args.holdout_windows}" if args.holdout_windows > 1 else ""
    trials = f"-t{args.trials}" if args.trials != 20 else ""
    return f"{args.dataset}{windows}{trials}-cal-{args.final_model}"


COLUMNS = ("tuned", "single_best", "fixed", "seasonal_naive")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="synthetic")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--holdout-windows", type=int, default=1,
                        help="tune --holdout-windows: rolling windows the objective pools")
    parser.add_argument("--final-model", choices=tuning_config.FINAL_MODELS,
                        default=tuning_config.FINAL_MODELS[0], help="tune --final-model")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated")
    parser.add_argument("--reuse", action="store_true",
                        help="take the seeds whose result file exists from it")
    parser.add_argument("--work-dir", type=Path, default=REPO / "out" / "tune_bench")
    args = parser.parse_args()

    results = REPO / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in map(int, args.seeds.split(",")):
        path = results / f"tune_bench-{_name(args)}-seed{seed}.json"
        if not (args.reuse and path.exists()):
            path.write_text(json.dumps(one_seed(args, seed), indent=2) + "\n")
        runs.append(json.loads(path.read_text()))
    medians = {column: {name: float(np.median([run[column][name] for run in runs]))
                        for name in FIGURES} for column in COLUMNS}
    report = {"dataset": args.dataset, "trials": args.trials,
              "holdout_windows": args.holdout_windows, "calibrate": True,
              "final_model": args.final_model, "runs": runs, "median": medians}
    output = results / f"tune_bench-{_name(args)}.json"
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"median of seeds {args.seeds}")
    print(f"{'':<22}" + "".join(f"{c:>15}" for c in COLUMNS))
    for name in FIGURES:
        print(f"{name:<22}" + "".join(f"{medians[c][name]:>15.4f}" for c in COLUMNS))
    for run in runs:
        print(f"seed {run['seed']}: {run['trials']} in {run['tune_seconds']:.0f} s; model "
              f"{run['ensemble']}; RMSE {run['tuned']['RMSE']:.4f} / single "
              f"{run['single_best']['RMSE']:.4f} / fixed {run['fixed']['RMSE']:.4f}")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
