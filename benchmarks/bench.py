"""deepar-cli beside the plain-GluonTS peer, in the same run, on the same files.

    python benchmarks/bench.py [--rounds 3] [--scales 10,100] [--output FILE]

Each round trains and scores both on generate's default data with the notebook's
hyperparameters (seed = round number), both with an OpenMP thread per core, and prints
medians and deepar-cli / peer ratios;
`--before` adds deepar-cli without deepar_cli.acceleration (GluonTS's own LSTM, zoneout
and sampling decoder), the before column.
Then `predict` is timed on one record (the command's fixed cost: start, imports, model
load), and on 1x and each scale's series count (built with `generate --num-series`), with
its peak memory, to show how cost grows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deepar_cli.threads import CPU_COUNT

REPO = Path(__file__).resolve().parents[1]
PEER = REPO.parent / "shared" / "peers" / "plain_gluonts.py"
HYPERPARAMETERS = REPO / "data" / "hyperparameters.json"
# Both sides get every core, as `deepar-cli` gives its MXNet (left to its own guess, MXNet
# takes one of this machine's two); an OMP_NUM_THREADS set by the user is kept for both.
THREADS = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(CPU_COUNT))}
KEYS = ("train_samples_per_second", "train_seconds", "predict_seconds", "peak_rss_mb",
        "RMSE", "mean_wQuantileLoss")


def run_json(command: list[str]) -> dict:
    """Run a command that prints one JSON object as its last stdout line."""
    out = subprocess.run(command, check=True, capture_output=True, text=True,
                         env={**os.environ, **THREADS}).stdout
    return json.loads(out.strip().splitlines()[-1])


def timed_rss(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of a command, via GNU time's %M when present."""
    tic = time.perf_counter()
    wrapped = ["/usr/bin/time", "-f", "%M"] + command if Path("/usr/bin/time").exists() \
        else command
    result = subprocess.run(wrapped, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - tic
    rss = float(result.stderr.strip().splitlines()[-1]) / 1024 if wrapped != command else \
        float("nan")
    return seconds, rss


def fixed_cost(model: Path, test: Path, work: Path, rounds: int) -> dict:
    """Wall seconds of `deepar-cli predict` on one record, `rounds` times: the command's
    fixed cost (interpreter, imports, model load), its forecast being one decoder batch."""
    one = work / "one.json"
    one.write_text(test.read_text().splitlines()[0] + "\n")
    seconds = [timed_rss([sys.executable, "-m", "deepar_cli", "predict", "--model-dir",
                          str(model), "--input", str(one), "--output",
                          str(work / "one.out")])[0] for _ in range(rounds)]
    return {"seconds": [round(s, 3) for s in seconds], "median": statistics.median(seconds)}


def generate(folder: Path, num_series: int) -> None:
    subprocess.run([sys.executable, "-m", "deepar_cli", "generate", "--output-dir",
                    str(folder), "--num-series", str(num_series)], check=True,
                   capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scales", default="10,100",
                        help="Series-count multiples to time predict on ('' to skip).")
    parser.add_argument("--peer", type=Path, default=PEER)
    parser.add_argument("--before", action="store_true",
                        help="Also run deepar-cli without its acceleration (the before column).")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks/results/bench.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="deepar-bench-"))
    data = work / "x1"
    generate(data, 200)
    train, test = str(data / "train.json"), str(data / "test.json")
    rounds = {"deepar-cli": [], "peer": [], **({"before": []} if args.before else {})}
    ours = [sys.executable, str(REPO / "benchmarks/run_deepar_cli.py"), "--train", train,
            "--test", test, "--hyperparameters", str(HYPERPARAMETERS)]
    for seed in range(args.rounds):
        rounds["peer"].append(run_json([sys.executable, str(args.peer), "--train", train,
                                        "--test", test, "--seed", str(seed)]))
        rounds["deepar-cli"].append(run_json([*ours, "--seed", str(seed)]))
        if args.before:
            rounds["before"].append(run_json([*ours, "--seed", str(seed), "--plain"]))
        print(f"round {seed + 1}/{args.rounds}: " + json.dumps(
            {name: {k: round(r[-1][k], 4) for k in KEYS} for name, r in rounds.items()}),
            flush=True)
    medians = {name: {k: statistics.median(r[k] for r in runs) for k in KEYS}
               for name, runs in rounds.items()}
    ratios = {k: medians["deepar-cli"][k] / medians["peer"][k] for k in KEYS}

    # predict (the batch transform, streaming) on growing inputs, with a model trained once
    scaling = []
    model = work / "model"
    subprocess.run([sys.executable, "-m", "deepar_cli", "train", "--train", train,
                    "--hyperparameters", str(HYPERPARAMETERS), "--epochs", "1",
                    "--model-dir", str(model), "--quiet"], check=True, capture_output=True)
    fixed = fixed_cost(model, data / "test.json", work, args.rounds)
    print(f"predict one record (start, imports, model load): median {fixed['median']:.2f} s "
          f"of {fixed['seconds']}", flush=True)
    for scale in [1] + [int(s) for s in args.scales.split(",") if s]:
        folder = data if scale == 1 else work / f"x{scale}"
        if scale != 1:
            generate(folder, 200 * scale)
        seconds, rss = timed_rss([sys.executable, "-m", "deepar_cli", "predict", "--model-dir",
                                  str(model), "--input", str(folder / "train.json"),
                                  "--output", str(work / "predictions.jsonl")])
        scaling.append({"scale": scale, "series": 200 * scale, "predict_seconds": seconds,
                        "peak_rss_mb": rss})
        print(f"predict {200 * scale} series: {seconds:.1f} s, peak RSS {rss:.0f} MB",
              flush=True)

    print(f"\nmedians of {args.rounds} rounds (notebook data and hyperparameters)")
    before = "before" in medians
    print(f"{'figure':<28}" + (f"{'before':>12}" if before else "")
          + f"{'deepar-cli':>12}{'peer':>12}{'ratio':>8}")
    for k in KEYS:
        print(f"{k:<28}" + (f"{medians['before'][k]:>12.4g}" if before else "")
              + f"{medians['deepar-cli'][k]:>12.4g}{medians['peer'][k]:>12.4g}"
              f"{ratios[k]:>8.2f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"rounds": rounds, "medians": medians, "ratios": ratios,
                                       "predict_one_record": fixed,
                                       "predict_scaling": scaling}, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
