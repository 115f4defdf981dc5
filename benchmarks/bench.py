"""deepar-cli beside the plain-GluonTS peer, in the same run, on the same files.

    python benchmarks/bench.py [--rounds 3] [--scales 10,100] [--conditions idle,busy,quota]
                               [--epochs N] [--before] [--output FILE]

Each round trains and scores both on generate's default data with the notebook's
hyperparameters (seed = round number) and prints medians and deepar-cli / peer ratios.
Each side sizes its thread pools as it does for a user: deepar-cli from the CPUs it may use
(deepar_cli.threads), the peer as MXNet guesses (half the cores the affinity mask shows); a
variable set in the environment (OMP_NUM_THREADS, ...) reaches both.
`--conditions` repeats the rounds on a machine that is not idle: `busy`, with one core kept
busy by a busy loop the benchmark starts and stops; `quota`, with both sides inside a CPU
quota of one CPU (a cgroup the benchmark makes, which needs root; skipped with a note where
it cannot). The speedups (the peer's forecast seconds / deepar-cli's, deepar-cli's training
samples/s / the peer's) are checked against the target: under contention, at least 80% of
the idle speedup and at least 2.
`--before` adds deepar-cli without
deepar_cli.backends.mxnet.acceleration (GluonTS's own LSTM, zoneout
and sampling decoder), the before column.
Then `predict` is timed on one record (the command's fixed cost: start, imports, model
load), and on 1x and each scale's series count (built with `generate --num-series`), with
its peak memory, to show how cost grows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional

from deepar_cli.threads import CPU_COUNT

REPO = Path(__file__).resolve().parents[1]
PEER = REPO.parent / "shared" / "peers" / "plain_gluonts.py"
HYPERPARAMETERS = REPO / "data" / "hyperparameters.json"
KEYS = ("train_samples_per_second", "train_seconds", "predict_seconds", "peak_rss_mb",
        "RMSE", "mean_wQuantileLoss")
CONDITIONS = ("idle", "busy", "quota")
BUSY_LIMIT_S = 3600  # the busy loop ends by itself if the benchmark dies without stopping it
TARGET = {"of_idle": 0.8, "at_least": 2.0}


def conditions_list(text: str) -> List[str]:
    names = text.split(",")
    for name in names:
        if name not in CONDITIONS:
            raise argparse.ArgumentTypeError(f"{name!r} is not one of {', '.join(CONDITIONS)}")
    return names


def run_json(command: list[str], preexec: Optional[Callable[[], None]] = None) -> dict:
    """Run a command that prints one JSON object as its last stdout line; `preexec` runs in
    the child before it starts."""
    out = subprocess.run(command, check=True, capture_output=True, text=True,
                         preexec_fn=preexec).stdout
    return json.loads(out.strip().splitlines()[-1])


@contextlib.contextmanager
def busy_core() -> Iterator[None]:
    """One core kept busy, by a process spinning in a bounded loop, for the block."""
    loop = subprocess.Popen([sys.executable, "-c", "import time\n"
                             f"end = time.monotonic() + {BUSY_LIMIT_S}\n"
                             "while time.monotonic() < end: pass"])
    try:
        yield
    finally:
        loop.terminate()
        loop.wait()


def _v2_folder(name: str) -> Path:
    """A new cgroup v2 folder, under the root, with the CPU controller."""
    root = Path("/sys/fs/cgroup")
    if "cpu" not in (root / "cgroup.controllers").read_text().split():
        raise OSError("no cgroup v2 cpu controller")
    if "cpu" not in (root / "cgroup.subtree_control").read_text().split():
        (root / "cgroup.subtree_control").write_text("+cpu")
    folder = root / name
    folder.mkdir()
    return folder


def one_cpu_cgroup() -> Path:
    """A new cgroup (v2, else v1) whose CPU quota is one CPU; OSError where this machine does
    not let us make one."""
    name = f"deepar-bench-{os.getpid()}"
    try:
        folder = _v2_folder(name)
        (folder / "cpu.max").write_text("100000 100000")
    except OSError:
        folder = Path("/sys/fs/cgroup/cpu") / name
        folder.mkdir()
        (folder / "cpu.cfs_quota_us").write_text((folder / "cpu.cfs_period_us").read_text())
    return folder


def run_rounds(args: argparse.Namespace, peer: List[str], ours: List[str], label: str,
               preexec: Optional[Callable[[], None]] = None) -> dict:
    """`args.rounds` rounds of the peer and deepar-cli: each round's figures, the medians,
    the ratios deepar-cli / peer and the speedups over the peer."""
    rounds: dict = {"deepar-cli": [], "peer": [], **({"before": []} if args.before else {})}
    epochs = ["--epochs", str(args.epochs)] if args.epochs else []
    for seed in range(args.rounds):
        common = ["--seed", str(seed), *epochs]
        rounds["peer"].append(run_json([*peer, *common], preexec))
        rounds["deepar-cli"].append(run_json([*ours, *common], preexec))
        if args.before:
            rounds["before"].append(run_json([*ours, *common, "--plain"], preexec))
        print(f"{label} round {seed + 1}/{args.rounds}: " + json.dumps(
            {name: {k: round(r[-1][k], 4) for k in KEYS} for name, r in rounds.items()}),
            flush=True)
    medians = {name: {k: statistics.median(r[k] for r in runs) for k in KEYS}
               for name, runs in rounds.items()}
    ratios = {k: medians["deepar-cli"][k] / medians["peer"][k] for k in KEYS}
    speedups = {"predict": 1 / ratios["predict_seconds"],
                "train": ratios["train_samples_per_second"]}
    return {"rounds": rounds, "medians": medians, "ratios": ratios, "speedups": speedups}


def print_medians(label: str, result: dict, rounds: int) -> None:
    medians, ratios = result["medians"], result["ratios"]
    print(f"\n{label}: medians of {rounds} rounds (notebook data and hyperparameters)")
    before = "before" in medians
    print(f"{'figure':<28}" + (f"{'before':>12}" if before else "")
          + f"{'deepar-cli':>12}{'peer':>12}{'ratio':>8}")
    for k in KEYS:
        print(f"{k:<28}" + (f"{medians['before'][k]:>12.4g}" if before else "")
              + f"{medians['deepar-cli'][k]:>12.4g}{medians['peer'][k]:>12.4g}"
              f"{ratios[k]:>8.2f}")
    print("speedup over the peer: " + ", ".join(
        f"{k} {v:.2f}x" for k, v in result["speedups"].items()))


def check_target(conditions: dict) -> dict:
    """Each contended condition's speedups against the target (80% of idle's, and 2)."""
    idle = conditions.get("idle", {}).get("speedups")
    checks = {}
    for name, result in conditions.items():
        if name == "idle" or "speedups" not in result:
            continue
        checks[name] = {
            part: {"speedup": value, "of_idle": value / idle[part] if idle else None,
                   "met": value >= TARGET["at_least"]
                   and (idle is None or value >= TARGET["of_idle"] * idle[part])}
            for part, value in result["speedups"].items()}
    return checks


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
    parser.add_argument("--conditions", default="idle", type=conditions_list,
                        help="Of idle, busy (one core kept busy), quota (a CPU quota of one "
                             "CPU), comma-separated.")
    parser.add_argument("--epochs", type=int,
                        help="Training epochs for both sides (default: the hyperparameters').")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks/results/bench.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="deepar-bench-"))
    data = work / "x1"
    generate(data, 200)
    train, test = str(data / "train.json"), str(data / "test.json")
    ours = [sys.executable, str(REPO / "benchmarks/run_deepar_cli.py"), "--train", train,
            "--test", test, "--hyperparameters", str(HYPERPARAMETERS)]
    peer = [sys.executable, str(args.peer), "--train", train, "--test", test]
    conditions = {}
    for name in args.conditions:
        if name == "idle":
            conditions[name] = run_rounds(args, peer, ours, name)
        elif name == "busy":
            with busy_core():
                conditions[name] = run_rounds(args, peer, ours, name)
        elif name == "quota":
            try:
                folder = one_cpu_cgroup()
            except OSError as error:
                note = f"skipped: cannot make a cgroup with a CPU quota here ({error})"
                print(f"quota {note}", flush=True)
                conditions[name] = {"skipped": note}
                continue
            def join(procs: Path = folder / "cgroup.procs") -> None:
                procs.write_text(str(os.getpid()))

            try:
                conditions[name] = run_rounds(args, peer, ours, name, join)
            finally:
                folder.rmdir()  # its processes have all ended

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

    for name, result in conditions.items():
        if "medians" in result:
            print_medians(name, result, args.rounds)
    checks = check_target(conditions)
    for name, parts in checks.items():
        print(f"{name}: " + "; ".join(
            f"{part} {c['speedup']:.2f}x"
            + (f", {c['of_idle']:.0%} of idle" if c["of_idle"] is not None else "")
            + (", meets the target" if c["met"] else ", misses the target")
            for part, c in parts.items()))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "cpus": CPU_COUNT, "load_average_at_end": os.getloadavg(), "epochs": args.epochs,
        "conditions": conditions, "target": TARGET, "target_checks": checks,
        "predict_one_record": fixed, "predict_scaling": scaling}, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
