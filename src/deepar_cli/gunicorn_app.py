"""`deepar-cli serve`: the endpoint (`deepar_cli.server.Endpoint`) under gunicorn.

Why gunicorn (already a dependency) rather than a hand-rolled `http.server` or Flask:

- pre-fork workers: each worker process holds its own model and answers one request at a
  time (the sync worker). Forecasts reseed MXNet's global generator per request, so a
  request must never share a process with another one in flight; processes, not threads,
  give both parallelism and reproducible answers;
- a worker whose request overruns `--timeout` (60 s, SageMaker's invocation timeout) is
  ended and replaced by the master, so one runaway request cannot wedge the endpoint
  (`Watchdog` first answers the client 504 with a JSON error; gunicorn's own worker
  timeout, a few seconds later, is the backstop);
- SIGTERM (what `docker stop` and SageMaker send) and, here, SIGINT (Ctrl-C) stop
  gracefully: the master stops accepting, the workers finish their in-flight request, and
  the process exits 0 within the graceful timeout.

The application is started by the command itself through a `gunicorn.app.base
.BaseApplication` subclass, with `preload_app=False`: MXNet is not fork-safe once used, so
the master never imports it; every worker loads the model after the fork (in `load`), and
answers `/ping` only once it has.
"""

from __future__ import annotations

import signal
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict

from deepar_cli.errors import ModelError, UsageError
from deepar_cli.server import MAX_PAYLOAD_MB, TIMEOUT_S, Endpoint, Settings
from deepar_cli.threads import use_cores

if TYPE_CHECKING:
    from deepar_cli.inference import InferenceConfig

BACKSTOP_S = 5  # gunicorn kills a worker this long after a request's own deadline


def _worker_class() -> Any:
    from gunicorn.workers.sync import SyncWorker

    class GracefulSyncWorker(SyncWorker):
        """A sync worker that treats SIGINT (Ctrl-C reaches every process of the
        terminal's group) like SIGTERM: finish the request in flight, then exit."""

        def init_signals(self) -> None:
            super().init_signals()
            signal.signal(signal.SIGINT, self.handle_exit)
            signal.siginterrupt(signal.SIGINT, False)

        def load_wsgi(self) -> None:
            """Load the model with the heartbeat on: `--timeout` bounds requests, not the
            loading of a large model (the master would kill the worker mid-load, again and
            again)."""
            done = threading.Event()

            def beat() -> None:
                while not done.wait(0.5):
                    self.notify()

            heart = threading.Thread(target=beat, name="load-heartbeat", daemon=True)
            heart.start()
            try:
                super().load_wsgi()
            finally:
                done.set()
                heart.join()

    return GracefulSyncWorker


def _application(settings: Settings, options: Dict[str, Any]) -> Any:
    from gunicorn.app.base import BaseApplication
    from gunicorn.arbiter import Arbiter
    from gunicorn.errors import AppImportError

    class GracefulArbiter(Arbiter):
        """gunicorn stops at once on SIGINT; stop gracefully, as on SIGTERM."""

        def handle_int(self) -> None:
            self.handle_term()

    class EndpointApplication(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)
            if "control_socket_disable" in self.cfg.settings:
                # gunicorn >= 25.1 would otherwise open ~/.gunicorn/gunicorn.ctl, one path
                # shared by every server of the user; nothing here uses it.
                self.cfg.set("control_socket_disable", True)

        def load(self) -> Endpoint:
            # Runs in each worker after the fork (preload_app=False): MXNet is loaded
            # here and never in the master.
            from deepar_cli import modelfolder

            try:
                model = modelfolder.load(settings.model_dir)
            except ModelError as error:
                raise AppImportError(f"Error: {error}") from None
            return Endpoint(model, settings)

        def run(self) -> None:
            try:
                GracefulArbiter(self).run()
            except RuntimeError as error:
                raise UsageError(str(error)) from None

    return EndpointApplication()


def check_model_folder(folder: Path) -> None:
    """Refuse a missing or incomplete model folder in the master, without MXNet (the
    workers load the model itself)."""
    from deepar_cli.modelfolder import FILES

    if not folder.is_dir():
        raise ModelError(f"{folder}: no such model folder (train one with `deepar-cli train`)")
    missing = [name for name in (*FILES, "predictor") if not (folder / name).exists()]
    if missing:
        raise ModelError(f"{folder}: not a deepar-cli model folder ({missing[0]} is missing)")


def _check_address(host: str, port: int) -> None:
    """Fail fast, with one line, if the address cannot be bound (gunicorn retries 5 s)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"host {host}: cannot be resolved ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror})") from None


def serve(model_dir: Path, *, lines_config: InferenceConfig, host: str = "127.0.0.1",
          port: int = 8080, workers: int = 1, timeout: int = TIMEOUT_S, seed: int = 42,
          max_payload_mb: float = MAX_PAYLOAD_MB) -> None:
    """Run the endpoint until SIGTERM/SIGINT (gunicorn then exits the process).
    `lines_config` configures JSON Lines requests (the CLI reads it from
    DEEPAR_INFERENCE_CONFIG, as SageMaker batch transform does, before anything starts)."""
    check_model_folder(model_dir)
    _check_address(host, port)
    settings = Settings(model_dir=model_dir, seed=seed, lines_config=lines_config,
                        max_body=int(max_payload_mb * 1024 * 1024), workers=workers,
                        timeout=timeout)
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    # Workers import MXNet after the fork: give each its share of the cores (unless the user
    # set OMP_NUM_THREADS), since OpenMP pools that together outnumber the cores spin against
    # each other (8 clients on 2 workers of 2 threads each: 0.2 requests/s).
    use_cores(workers)

    def when_ready(server: Any) -> None:
        server.log.info("deepar-cli endpoint for %s on http://%s (%d worker%s, seed %d); "
                        "each worker answers /ping once its model is loaded", model_dir,
                        bind, workers, "" if workers == 1 else "s", seed)

    options = {
        "bind": [bind],
        "workers": workers,
        "worker_class": _worker_class(),
        # The Watchdog answers a request at `timeout`; gunicorn's heartbeat timeout is the
        # backstop. Shutdown waits as long, so a request in flight can finish.
        "timeout": timeout + BACKSTOP_S,
        "graceful_timeout": timeout + BACKSTOP_S,
        "preload_app": False,  # never MXNet in the master: it is not fork-safe
        "proc_name": "deepar-cli-serve",
        "errorlog": "-",
        "loglevel": "info",
        "when_ready": when_ready,
    }
    _application(settings, options).run()
