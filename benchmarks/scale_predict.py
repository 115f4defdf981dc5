"""Batch transform at scale: series per second with one process and with Ray.

    python benchmarks/scale_predict.py [--series 20000] [--output FILE]

Times `deepar-cli predict` (SageMaker's default output: mean and quantiles 0.1 ... 0.9,
100 samples) on `--series` of generate's series with a model trained for one epoch on the
notebook's hyperparameters: one process (one thread); `--engine ray` with 1 and 2 workers
on a local Ray;
and 2 workers on a two-node Ray cluster on this machine (`ray start --head` and a second
`ray start --address`, both on 127.0.0.1). Peak RSS of each forecasting process (the
predict process, or each Ray worker) is sampled while it runs, for the run at full size
and one at a tenth of it. From the measured per-worker rate it projects a million series
on 10 and 100 machines. Writes benchmarks/results/scale_predict.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import psutil

REPO = Path(__file__).resolve().parents[1]
HYPERPARAMETERS = REPO / "data" / "hyperparameters.json"
CLI = [sys.executable, "-m", "deepar_cli"]
RAY = Path(sys.executable).parent / "ray"
# One OpenMP thread for the one process, as each Ray worker has: a per-core comparison, and
# on a shared machine two threads on two busy cores stall each other (200 series took 78 s
# with 2 threads and 14 s with 1 on this machine under a load of 6).
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
# Every Ray process stays on loopback, reports nothing, runs no dashboard (see
# deepar_cli.inference.ray_engine): Ray keeps 127.0.0.1 only with
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0.
# Ray 2.60's `ray start` turns token authentication on; its clients need RAY_AUTH_MODE=token
# to send the token (kept in ~/.ray/auth_token).
LOOPBACK = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_AUTH_MODE": "token"}
# A second node: `ray start --address 127.0.0.1:PORT` would replace 127.0.0.1 with this
# machine's interface address (and abort under the variable above), so its address is
# kept as given.
JOIN = ("import sys, ray._private.services as s; s.resolve_ip_for_localhost = lambda h: h; "
        "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()")


class PeakRss:
    """Sample the RSS of a process (`root`) and of Ray's workers every 0.2 s."""

    def __init__(self, root: int) -> None:
        self.root, self.peaks = root, {}  # type: Dict[int, float]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for process in psutil.process_iter(["pid", "cmdline", "memory_info"]):
                cmd = " ".join(process.info["cmdline"] or [])
                mine = process.info["pid"] == self.root or cmd.startswith("ray::ShardWorker")
                if mine and process.info["memory_info"] is not None:
                    mb = process.info["memory_info"].rss / 2**20
                    self.peaks[process.info["pid"]] = max(self.peaks.get(process.info["pid"],
                                                                         0.0), mb)
            self._stop.wait(0.2)

    def stop(self, forecasting_root: bool) -> List[float]:
        self._stop.set()
        self._thread.join()
        peaks = dict(self.peaks)
        if not forecasting_root:
            peaks.pop(self.root, None)
        return sorted(round(v, 1) for v in peaks.values())


def predict(model: Path, source: Path, out: Path, *extra: str,
            env: Optional[Dict[str, str]] = None) -> Dict[str, object]:
    command = CLI + ["predict", "--model-dir", str(model), "--input", str(source),
                     "--output", str(out), "--quiet", *extra]
    tic = time.perf_counter()
    process = subprocess.Popen(command, env={**os.environ, **LOOPBACK, **(env or {})},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rss = PeakRss(process.pid)
    stdout, stderr = process.communicate()
    seconds = time.perf_counter() - tic
    peaks = rss.stop(forecasting_root="--engine" not in extra)
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{stderr}")
    count = int(stdout.split()[1])
    return {"seconds": round(seconds, 2), "series": count,
            "series_per_second": round(count / seconds, 2), "peak_rss_mb": peaks}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ray_cli(*args: str, join: bool = False) -> None:
    command = [sys.executable, "-c", JOIN] if join else [str(RAY)]
    env = {**os.environ, **LOOPBACK}
    if join:
        del env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"]
    subprocess.run(command + list(args), env=env, check=True, capture_output=True,
                   timeout=180)


def listening(temp: Path) -> List[str]:
    """Local addresses that the cluster's processes listen on."""
    pids = {p.pid for p in psutil.process_iter(["cmdline"])
            if str(temp) in " ".join(p.info["cmdline"] or [])}
    pids |= {c.pid for p in list(pids) for c in psutil.Process(p).children(recursive=True)}
    return sorted({f"{c.laddr.ip}:{c.laddr.port}" for c in psutil.net_connections("tcp")
                   if c.status == psutil.CONN_LISTEN and c.pid in pids})


def two_node_run(model: Path, source: Path, out: Path, temp: Path) -> Dict[str, object]:
    port = free_port()
    cluster = temp / "cluster"
    cluster.mkdir()
    ray_cli("start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
            "--include-dashboard=false", "--num-cpus", "1", "--temp-dir", str(cluster))
    try:
        ray_cli("start", "--address", f"127.0.0.1:{port}", "--num-cpus", "1", join=True)
        result = predict(model, source, out, "--engine", "ray", "--address",
                         f"127.0.0.1:{port}", "--workers", "2")
        result["listening"] = listening(cluster)
        return result
    finally:
        stop_cluster(cluster)


def stop_cluster(cluster: Path) -> None:
    """Stop the two nodes' processes, found by their temp folder, by pid."""
    processes = [p for p in psutil.process_iter(["cmdline"])
                 if str(cluster) in " ".join(p.info["cmdline"] or [])]
    family = processes + [c for p in processes for c in p.children(recursive=True)]
    for p in family:
        p.terminate()
    _, alive = psutil.wait_procs(family, timeout=10)
    for p in alive:
        p.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=20_000)
    parser.add_argument("--output", type=Path,
                        default=REPO / "benchmarks" / "results" / "scale_predict.json")
    args = parser.parse_args()

    from deepar_cli.data.channels import write_records
    from deepar_cli.data.synthetic import SyntheticSpec, generate

    with tempfile.TemporaryDirectory() as tmp:
        temp = Path(tmp)
        subprocess.run(CLI + ["generate", "--output-dir", str(temp / "train")], check=True,
                       capture_output=True)
        subprocess.run(CLI + ["train", "--train", str(temp / "train" / "train.json"),
                              "--hyperparameters", str(HYPERPARAMETERS), "--epochs", "1",
                              "--model-dir", str(temp / "model"), "--quiet"],
                       check=True, capture_output=True)
        sizes = {}
        for n in (args.series // 10, args.series):
            _, test = generate(SyntheticSpec(num_series=n))
            sizes[n] = temp / f"test-{n}.json"
            write_records(sizes[n], test)
        model, full, tenth = temp / "model", sizes[args.series], sizes[args.series // 10]
        runs: Dict[str, Dict[str, object]] = {}
        small: Dict[str, Dict[str, object]] = {}
        result: Dict[str, object] = {
            "series": args.series, "cpus": os.cpu_count(),
            "output": "mean + quantiles 0.1 ... 0.9, 100 samples (SageMaker's default)",
            "runs": runs, "runs_at_a_tenth": small}
        plan = [
            (runs, "one process", lambda: predict(model, full, temp / "local.out",
                                                  env=ONE_THREAD)),
            (runs, "ray, 1 worker", lambda: predict(model, full, temp / "ray1.out",
                                                    "--engine", "ray", "--workers", "1")),
            (runs, "ray, 2 workers", lambda: predict(model, full, temp / "ray2.out",
                                                     "--engine", "ray", "--workers", "2")),
            (runs, "ray, 2 nodes x 1 worker",
             lambda: two_node_run(model, full, temp / "nodes.out", temp)),
            (small, "one process", lambda: predict(model, tenth, temp / "local-small.out",
                                                   env=ONE_THREAD)),
            (small, "ray, 2 workers", lambda: predict(model, tenth, temp / "ray2-small.out",
                                                      "--engine", "ray", "--workers", "2")),
        ]
        for table, name, run in plan:
            table[name] = run()
            save(args.output, result)  # a run cut short keeps what it measured
        scale = 1_000_000 / args.series / 1e9
        result["driver_gb_for_1M_series"] = {
            "in": round(full.stat().st_size * scale, 1),
            "out": round((temp / "local.out").stat().st_size * scale, 1)}
        result["ray_outputs_identical_to_one_process"] = all(
            (temp / f"{name}.out").read_bytes() == (temp / "local.out").read_bytes()
            for name in ("ray1", "ray2", "nodes"))

    # The marginal rate (series beyond the tenth over the time beyond it) leaves out what
    # does not grow with the input: starting Ray and the workers, loading the model.
    extra = runs["ray, 2 workers"]["seconds"] - small["ray, 2 workers"]["seconds"]
    per_worker = (args.series - args.series // 10) / extra / 2
    workers_per_machine = os.cpu_count() or 1
    result["per_worker_series_per_second"] = round(per_worker, 2)
    result["projected_minutes_for_1M_series"] = {
        f"{m} machines": round(1_000_000 / (per_worker * workers_per_machine * m) / 60, 1)
        for m in (10, 100)}
    result["projection_assumptions"] = (
        f"machines like this one ({workers_per_machine} CPUs), one 1-CPU worker per CPU, each "
        "forecasting at the marginal per-worker rate of the 2-worker runs here (series "
        "beyond the tenth over the seconds beyond it); shards are independent, so "
        "throughput adds up across machines; not counted: Ray's and the workers' start "
        "(the tenth's run time minus its series at that rate), and the driver's own reading "
        "and writing of shards (driver_gb_for_1M_series), which one driver must keep up "
        "with")
    save(args.output, result)
    print(json.dumps(result, indent=2))
    print(markdown(result))


def save(path: Path, result: Dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


def markdown(result: Dict[str, object]) -> str:
    """docs/benchmark.md's table: wall time, series/s and peak RSS per forecasting process."""
    def mb(values: List[float]) -> str:
        return "/".join(f"{v:.0f}" for v in values)

    small = {k: v["peak_rss_mb"] for k, v in result["runs_at_a_tenth"].items()}
    lines = ["| run | wall s | series/s | peak RSS per process, MB | at a tenth |",
             "|---|---|---|---|---|"]
    for name, run in result["runs"].items():
        lines.append(f"| {name} | {run['seconds']:.0f} | {run['series_per_second']:.1f} | "
                     f"{mb(run['peak_rss_mb'])} | {mb(small.get(name, [])) or '-'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
