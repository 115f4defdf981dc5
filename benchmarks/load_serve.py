"""Load on `deepar-cli serve`: requests/s and latency at 1 and 8 concurrent clients.

    python benchmarks/load_serve.py MODEL_DIR [--workers 2] [--clients 1,8]
        [--max-requests 200] [--max-seconds 20] [--output FILE]

Starts the endpoint on a free loopback port, sends the same 5-series request (100 samples,
mean and quantiles, as SageMaker's defaults) from each client in a closed loop, and stops
each level after --max-requests answers or --max-seconds, whichever comes first. Prints a
table and writes the figures as JSON. Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

HOST = "127.0.0.1"
START_TIMEOUT_S = 90
HTTP_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def call(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(HOST, port, timeout=HTTP_TIMEOUT_S)
    try:
        headers = {"Content-Type": "application/json"} if body else {}
        connection.request(method, path, body=body or None, headers=headers)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def build_request(model_dir: Path, num_series: int, num_samples: int) -> bytes:
    """`num_series` noisy sine waves as long as two contexts, fit for the model's features."""
    hp = json.loads((model_dir / "hyperparameters.json").read_text())
    meta = json.loads((model_dir / "model.json").read_text())
    context = int(hp["context_length"])
    horizon = int(hp["prediction_length"])
    length = 2 * context
    instances = []
    for k in range(num_series):
        target = [round(5 + 3 * math.sin(2 * math.pi * t / 24 + k) + 0.1 * ((t * 7919 + k)
                                                                             % 13 - 6), 4)
                  for t in range(length)]
        record: Dict[str, Any] = {"start": "2016-01-01 00:00:00", "target": target}
        if meta.get("cardinality"):
            record["cat"] = [k % size for size in meta["cardinality"]]
        if meta.get("num_dynamic_feat"):
            record["dynamic_feat"] = [[math.sin(t / (j + 2)) for t in range(length + horizon)]
                                      for j in range(int(meta["num_dynamic_feat"]))]
        instances.append(record)
    return json.dumps({"instances": instances,
                       "configuration": {"num_samples": num_samples,
                                         "output_types": ["mean", "quantiles"]}}).encode()


def level(port: int, body: bytes, clients: int, max_requests: int, max_seconds: float
          ) -> Dict[str, Any]:
    """Closed loop: `clients` threads, each sends, waits for the answer, sends again."""
    latencies: List[float] = []
    failures = [0]
    lock = threading.Lock()
    issued = [0]
    deadline = time.perf_counter() + max_seconds

    def client() -> None:
        while time.perf_counter() < deadline:
            with lock:
                if issued[0] >= max_requests:
                    return
                issued[0] += 1
            tic = time.perf_counter()
            try:
                status, _ = call(port, "POST", "/invocations", body)
            except OSError:
                status = 0
            seconds = time.perf_counter() - tic
            with lock:
                if status == 200:
                    latencies.append(seconds)
                else:
                    failures[0] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    tic = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max_seconds + HTTP_TIMEOUT_S)
    elapsed = time.perf_counter() - tic
    latencies.sort()

    def pct(q: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, math.ceil(q * len(latencies)) - 1)] * 1000

    return {"clients": clients, "requests": len(latencies), "failures": failures[0],
            "seconds": round(elapsed, 3),
            "requests_per_second": round(len(latencies) / elapsed, 2),
            "p50_ms": round(pct(0.50), 1), "p99_ms": round(pct(0.99), 1),
            "mean_ms": round(statistics.fmean(latencies) * 1000, 1) if latencies else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", default="1,8", help="Concurrency levels, e.g. 1,8.")
    parser.add_argument("--series", type=int, default=5)
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--max-requests", type=int, default=200, help="Per level.")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="Per level.")
    parser.add_argument("--output", type=Path,
                        default=Path(__file__).parent / "results" / "load_serve.json")
    args = parser.parse_args()

    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="serve-", suffix=".log", delete=False)
    server = subprocess.Popen(
        [sys.executable, "-m", "deepar_cli", "serve", "--model-dir", str(args.model_dir),
         "--host", HOST, "--port", str(port), "--workers", str(args.workers)],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if server.poll() is not None:
                sys.exit(f"serve exited {server.returncode}; see {log.name}")
            try:
                if call(port, "GET", "/ping")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                sys.exit(f"no /ping within {START_TIMEOUT_S} s; see {log.name}")
            time.sleep(0.2)
        body = build_request(args.model_dir, args.series, args.num_samples)
        status, answer = call(port, "POST", "/invocations", body)
        if status != 200:
            sys.exit(f"the request was refused ({status}): {answer.decode()[:300]}")
        for _ in range(2 * args.workers):  # warm every worker (first calls build graphs)
            call(port, "POST", "/invocations", body)
        results = [level(port, body, int(n), args.max_requests, args.max_seconds)
                   for n in args.clients.split(",")]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log.close()

    print(f"deepar-cli serve: {args.workers} workers, {args.series} series x "
          f"{args.num_samples} samples a request, {len(body)} bytes in, "
          f"{len(answer)} bytes out")
    print(f"{'clients':>7} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'failures':>8}")
    for row in results:
        print(f"{row['clients']:>7} {row['requests']:>8} {row['requests_per_second']:>8.2f} "
              f"{row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['failures']:>8}")
    report = {"model_dir": str(args.model_dir), "workers": args.workers,
              "series": args.series, "num_samples": args.num_samples,
              "max_requests": args.max_requests, "max_seconds": args.max_seconds,
              "cpus": os.cpu_count(), "python": platform.python_version(),
              "server_exit_code": server.returncode, "levels": results}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    os.unlink(log.name)


if __name__ == "__main__":
    main()
