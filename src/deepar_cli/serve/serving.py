"""`deepar-cli serve`: an asyncio HTTP front and a pool of forecasting processes.

Why this shape, and not gunicorn's sync workers (what came before): a sync worker reads
its client's request itself, so two clients trickling a body one byte at a time held
both workers, and /ping with them, until the 60 s watchdog killed the workers (gunicorn
says its sync workers need a buffering proxy; SageMaker's containers put nginx in front).
Here one asyncio loop in the main process (`deepar_cli.serve.http_front`, on h11) does all the
HTTP: it reads requests under read timeouts and size limits, answers /ping from the
pool's state, and hands only complete, size-checked bodies to `deepar_cli.serve.worker_pool`,
whose processes do nothing but forecast. That is nginx + gunicorn's division of labour
in one pip-installable command. Why not uvicorn or hypercorn: neither bounds the time a
request's head may take with a 408, nor lets the application refuse an oversized
Content-Length before the body is read with an exact JSON answer; each would need the
same code around it, plus an ASGI layer. Worker processes, not threads: forecasts reseed
MXNet's global generator per request, and MXNet is not fork-safe once loaded, so each
worker is a fresh interpreter that loads the model once; the main process never imports
MXNet.

SIGTERM and SIGINT (Ctrl-C) stop gracefully: the socket stops accepting, idle
connections close, requests in flight are answered (for up to `timeout + read_timeout`
seconds), then the workers are stopped and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from deepar_cli.errors import ModelError, UsageError
from deepar_cli.serve.http_front import Front
from deepar_cli.serve.server import (
    KEEP_ALIVE_S,
    MAX_BUFFER_MB,
    MAX_CONNECTIONS,
    MAX_PAYLOAD_MB,
    MAX_QUEUE,
    MB,
    READ_TIMEOUT_S,
    TIMEOUT_S,
    Settings,
)
from deepar_cli.serve.worker import setup_log
from deepar_cli.serve.worker_pool import WorkerPool
from deepar_cli.threads import use_cores

if TYPE_CHECKING:
    from deepar_cli.inference.protocol import InferenceConfig

log = logging.getLogger("deepar_cli.serve")


def check_model_folder(folder: Path) -> None:
    """Refuse a missing or incomplete model folder up front, without MXNet (the workers
    load the model itself)."""
    from deepar_cli.model.modelfolder import FILES

    if not folder.is_dir():
        raise ModelError(f"{folder}: no such model folder (train one with `deepar-cli train`)")
    missing = [name for name in (*FILES, "predictor") if not (folder / name).exists()]
    if missing:
        raise ModelError(f"{folder}: not a deepar-cli model folder ({missing[0]} is missing)")


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, or a one-line UsageError."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"host {host}: cannot be resolved ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    sock.setblocking(False)
    return sock


def serve(model_dir: Path, *, lines_config: InferenceConfig, host: str = "127.0.0.1",
          port: int = 8080, workers: int = 1, seed: int = 42, timeout: float = TIMEOUT_S,
          read_timeout: float = READ_TIMEOUT_S, keep_alive: float = KEEP_ALIVE_S,
          max_payload_mb: float = MAX_PAYLOAD_MB, max_connections: int = MAX_CONNECTIONS,
          max_queue: int = MAX_QUEUE, max_buffer_mb: float = MAX_BUFFER_MB) -> None:
    """Run the endpoint until SIGTERM/SIGINT. `lines_config` configures JSON Lines
    requests (the CLI reads it from DEEPAR_INFERENCE_CONFIG, as SageMaker batch transform
    does, before anything starts)."""
    check_model_folder(model_dir)
    settings = Settings(model_dir=model_dir, seed=seed, lines_config=lines_config,
                        max_body=int(max_payload_mb * MB), workers=workers, timeout=timeout,
                        read_timeout=read_timeout, keep_alive=keep_alive,
                        max_connections=max_connections, max_queue=max_queue,
                        max_buffer=int(max_buffer_mb * MB))
    sock = listen(host, port)
    # Give each worker its share of the cores (unless the user set OMP_NUM_THREADS):
    # OpenMP pools that together outnumber the cores spin against each other.
    use_cores(settings.workers)
    setup_log()
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    error = asyncio.run(_run(settings, sock, address))
    if error is not None:
        raise error


async def _run(settings: Settings, sock: socket.socket, address: str) -> Optional[Exception]:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    pool = WorkerPool(settings)
    front = Front(settings, pool)
    server = await asyncio.start_server(front.accept, sock=sock)
    pool.start()
    log.info("deepar-cli endpoint for %s on http://%s (%d worker%s, seed %d); /ping answers "
             "200 once a worker has loaded the model", settings.model_dir, address,
             settings.workers, "" if settings.workers == 1 else "s", settings.seed)
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({stopped, pool.failed}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    log.info("shutting down: answering the requests in flight")
    server.close()
    await front.shutdown(grace=settings.timeout + settings.read_timeout)
    await pool.stop()
    log.info("stopped")
    return pool.failed.result() if pool.failed.done() else None
