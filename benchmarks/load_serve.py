"""Load on `deepar-cli serve`: requests/s and latency under quiet, slow and heavy clients.

    python benchmarks/load_serve.py MODEL_DIR [--workers 2] [--clients 1,8,32,128]
        [--slow-clients 100] [--big-clients 100] [--max-requests 200] [--max-seconds 20]
        [--label NAME] [--output FILE]

Starts the endpoint on a free loopback port, sends the same 5-series request (100 samples,
mean and quantiles, as SageMaker's defaults) from each client in a closed loop, and stops
each level after --max-requests answers or --max-seconds, whichever comes first. Meanwhile
a health checker sends GET /ping every 50 ms on a new connection, as a load balancer
does; its p99 is the /ping latency under that load. Every level runs twice: alone, then
with --slow-clients connections in the background, each trickling one byte of a request
every 2 s (and reconnecting when the server closes it). Last, --big-clients clients each
send a maximum-size (6 MB) body at once, and the server's resident memory (front and
workers) is sampled. Prints a table and writes the figures as JSON. Only 127.0.0.1 is
ever contacted. To measure another version, put its source first on PYTHONPATH (the
server runs `python -m deepar_cli serve` with this environment).
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
from typing import Any, Dict, List, Tuple

HOST = "127.0.0.1"
START_TIMEOUT_S = 90
HTTP_TIMEOUT_S = 120
PING_EVERY_S = 0.05
TRICKLE_EVERY_S = 2.0


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


def percentile(values: List[float], q: float) -> float:
    """The q-quantile (nearest rank) in milliseconds; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] * 1000, 1)


class Background(threading.Thread):
    """A daemon thread whose `run` loops until `stop`."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.halt = threading.Event()

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=HTTP_TIMEOUT_S)


class Pinger(Background):
    """GET /ping every PING_EVERY_S on a new connection; keeps the latencies."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.port = port
        self.seconds: List[float] = []
        self.failures = 0

    def run(self) -> None:
        while not self.halt.wait(PING_EVERY_S):
            tic = time.perf_counter()
            try:
                ok = call(self.port, "GET", "/ping")[0] == 200
            except OSError:
                ok = False
            if ok:
                self.seconds.append(time.perf_counter() - tic)
            else:
                self.failures += 1


class SlowClients(Background):
    """`count` connections, each sending one byte of a POST every TRICKLE_EVERY_S."""

    def __init__(self, port: int, count: int, body: bytes) -> None:
        super().__init__()
        self.port = port
        self.count = count
        self.request = (f"POST /invocations HTTP/1.1\r\nHost: {HOST}\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {len(body)}"
                        f"\r\n\r\n").encode() + body
        self.reconnects = 0

    def run(self) -> None:
        sockets: List[Any] = [None] * self.count
        sent = [0] * self.count
        due = [time.monotonic() + i * TRICKLE_EVERY_S / self.count for i in range(self.count)]
        while not self.halt.wait(0.01):
            now = time.monotonic()
            for i in range(self.count):
                if due[i] > now:
                    continue
                due[i] = now + TRICKLE_EVERY_S
                try:
                    if sockets[i] is None:
                        sockets[i] = socket.create_connection((HOST, self.port), timeout=5)
                        sockets[i].setblocking(False)
                        sent[i] = 0
                    sockets[i].send(self.request[sent[i]:sent[i] + 1])
                    sent[i] += 1
                    try:
                        sockets[i].recv(65536)
                    except BlockingIOError:  # nothing back yet: still a slow client
                        continue
                    raise ConnectionResetError  # an answer (408) or EOF: start over
                except OSError:
                    if sockets[i] is not None:
                        sockets[i].close()
                        self.reconnects += 1
                    sockets[i] = None
        for sock in sockets:
            if sock is not None:
                sock.close()


def level(port: int, body: bytes, clients: int, max_requests: int, max_seconds: float
          ) -> Dict[str, Any]:
    """Closed loop: `clients` threads, each sends, waits for the answer, sends again."""
    latencies: List[float] = []
    statuses: Dict[int, int] = {}
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
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    latencies.append(seconds)

    pinger = Pinger(port)
    pinger.start()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    tic = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max_seconds + HTTP_TIMEOUT_S)
    elapsed = time.perf_counter() - tic
    pinger.stop()
    return {"clients": clients, "requests": len(latencies),
            "failures": sum(n for status, n in statuses.items() if status != 200),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "seconds": round(elapsed, 3),
            "requests_per_second": round(len(latencies) / elapsed, 2),
            "p50_ms": percentile(latencies, 0.50), "p99_ms": percentile(latencies, 0.99),
            "mean_ms": round(statistics.fmean(latencies) * 1000, 1) if latencies else None,
            "pings": len(pinger.seconds), "ping_failures": pinger.failures,
            "ping_p50_ms": percentile(pinger.seconds, 0.50),
            "ping_p99_ms": percentile(pinger.seconds, 0.99)}


def rss_mb(pid: int) -> Tuple[float, float]:
    """Resident memory (MB, Linux /proc) of a process, and of it with its children."""
    def one(each: int) -> int:
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(p) for p in children.read_text().split()] if children.exists() else []
    own = one(pid)
    return round(own / 1024, 1), round((own + sum(one(k) for k in kids)) / 1024, 1)


def big_bodies(port: int, server_pid: int, clients: int) -> Dict[str, Any]:
    """`clients` clients at once, each sending a 6 MB body (whitespace around `{}`: cheap
    to refuse once read); peak resident memory of the server meanwhile."""
    body = b"{" + b" " * (6 * 1024 * 1024 - 2) + b"}"
    statuses: Dict[int, int] = {}
    lock = threading.Lock()
    before = rss_mb(server_pid)
    peak = list(before)
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            now = rss_mb(server_pid)
            peak[:] = [max(a, b) for a, b in zip(peak, now)]

    def client() -> None:
        try:
            status = call(port, "POST", "/invocations", body)[0]
        except OSError:
            status = 0
        with lock:
            statuses[status] = statuses.get(status, 0) + 1

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tic = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=HTTP_TIMEOUT_S)
    done.set()
    sampler.join()
    return {"clients": clients, "body_mb": 6, "seconds": round(time.perf_counter() - tic, 2),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "rss_before_mb": {"main": before[0], "with_workers": before[1]},
            "rss_peak_mb": {"main": peak[0], "with_workers": peak[1]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", default="1,8,32,128", help="Concurrency levels.")
    parser.add_argument("--slow-clients", type=int, default=100,
                        help="Background trickling connections in the second pass (0: none).")
    parser.add_argument("--big-clients", type=int, default=100,
                        help="Clients sending a 6 MB body at once, last (0: skip).")
    parser.add_argument("--series", type=int, default=5)
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--max-requests", type=int, default=200, help="Per level.")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="Per level.")
    parser.add_argument("--label", default="asyncio-front",
                        help="Names the server version in the report.")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    output = args.output or (Path(__file__).parent / "results" / f"load_serve-{args.label}.json")

    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="serve-", suffix=".log", delete=False)
    server = subprocess.Popen(
        [sys.executable, "-m", "deepar_cli", "serve", "--model-dir", str(args.model_dir),
         "--host", HOST, "--port", str(port), "--workers", str(args.workers)],
        stdout=log, stderr=subprocess.STDOUT)
    passes: Dict[str, List[Dict[str, Any]]] = {}
    big: Dict[str, Any] = {}
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
        time.sleep(5)  # every worker up (a /ping answers once the first one is)
        body = build_request(args.model_dir, args.series, args.num_samples)
        status, answer = call(port, "POST", "/invocations", body)
        if status != 200:
            sys.exit(f"the request was refused ({status}): {answer.decode()[:300]}")
        for _ in range(2 * args.workers):  # warm every worker (first calls build graphs)
            call(port, "POST", "/invocations", body)
        levels = [int(n) for n in args.clients.split(",")]
        passes["quiet"] = [level(port, body, n, args.max_requests, args.max_seconds)
                           for n in levels]
        if args.slow_clients:
            slow = SlowClients(port, args.slow_clients, body)
            slow.start()
            time.sleep(2 * TRICKLE_EVERY_S)  # every slow client connected
            passes[f"{args.slow_clients} slow clients"] = [
                level(port, body, n, args.max_requests, args.max_seconds) for n in levels]
            slow.stop()
        if args.big_clients:
            big = big_bodies(port, server.pid, args.big_clients)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=90)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log.close()

    print(f"deepar-cli serve ({args.label}): {args.workers} workers, {args.series} series x "
          f"{args.num_samples} samples a request, {len(body)} bytes in, "
          f"{len(answer)} bytes out")
    for name, rows in passes.items():
        print(f"\n{name}:")
        print(f"{'clients':>7} {'ok':>5} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'failed':>6} {'ping p50':>8} {'ping p99':>8} {'ping failed':>11}")
        for row in rows:
            print(f"{row['clients']:>7} {row['requests']:>5} {row['requests_per_second']:>7.2f} "
                  f"{row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['failures']:>6} "
                  f"{row['ping_p50_ms']:>8.1f} {row['ping_p99_ms']:>8.1f} "
                  f"{row['ping_failures']:>11}")
    if big:
        before, peak = big["rss_before_mb"], big["rss_peak_mb"]
        print(f"\n{big['clients']} clients x 6 MB bodies at once: statuses {big['statuses']}, "
              f"{big['seconds']} s; RSS of the main process {before['main']} -> peak "
              f"{peak['main']} MB, with the workers {before['with_workers']} -> peak "
              f"{peak['with_workers']} MB")
    report = {"label": args.label, "model_dir": str(args.model_dir), "workers": args.workers,
              "series": args.series, "num_samples": args.num_samples,
              "max_requests": args.max_requests, "max_seconds": args.max_seconds,
              "cpus": os.cpu_count(), "load_average": os.getloadavg(),
              "python": platform.python_version(), "server_exit_code": server.returncode,
              "passes": passes, "big_bodies": big}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {output}")
    os.unlink(log.name)


if __name__ == "__main__":
    main()
