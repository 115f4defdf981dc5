"""`deepar-cli serve`: SageMaker's DeepAR endpoint (`GET /ping`, `POST /invocations`).

A plain WSGI application (`Endpoint`) answers through `deepar_cli.inference`, the path
`deepar-cli predict` takes, so the same request and seed give the same bytes from either.
`Content-Type: application/json` (also assumed when the header is absent) is an endpoint
request, `{"instances": [...], "configuration": {...}}`; `application/jsonlines` is one
record a line, configured by DEEPAR_INFERENCE_CONFIG. `Accept` picks either format for the
answer (by default the request's). Refusals are `{"error": "..."}` with a 4xx status; a bug
is logged with its traceback and answered 500 with a JSON body that holds none.

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

import logging
import os
import signal
import socket
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import orjson

from deepar_cli import CPU_COUNT, USER_OMP_THREADS
from deepar_cli.errors import DataError, ModelError, RequestError, UsageError

log = logging.getLogger("gunicorn.error")

JSON = "application/json"
JSON_LINES = "application/jsonlines"
# Media types accepted for each format (Content-Type and Accept), canonical name first.
FORMATS: Dict[str, Tuple[str, ...]] = {
    JSON: (JSON,),
    JSON_LINES: (JSON_LINES, "application/x-jsonlines", "application/jsonl"),
}
MAX_PAYLOAD_MB = 6.0  # SageMaker's real-time endpoint payload limit
TIMEOUT_S = 60  # SageMaker's invocation timeout
BACKSTOP_S = 5  # gunicorn kills a worker this long after a request's own deadline
DRAIN_LIMIT = 64 * 1024 * 1024  # read (and discard) at most this much of a refused body
ROUTES: Dict[str, Tuple[str, ...]] = {
    "/ping": ("GET", "HEAD"),
    "/invocations": ("POST",),
    "/execution-parameters": ("GET",),
}

StartResponse = Callable[..., Any]


class HTTPError(Exception):
    """A request the endpoint refuses: status code and the message for `{"error": ...}`."""

    def __init__(self, status: int, message: str, headers: Iterable[Tuple[str, str]] = ()
                 ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


@dataclass(frozen=True)
class Settings:
    """What every worker needs to answer; built (and validated) in the master."""

    model_dir: Path
    seed: int = 42
    lines_config: Any = None  # InferenceConfig for JSON Lines requests (None: defaults)
    max_body: int = int(MAX_PAYLOAD_MB * 1024 * 1024)
    workers: int = 1
    timeout: int = TIMEOUT_S


def _media_type(header: str) -> str:
    return header.split(";", 1)[0].strip().lower()


def _format_of(media_type: str) -> Optional[str]:
    for name, aliases in FORMATS.items():
        if media_type in aliases:
            return name
    return None


def _accepted(accept: str, natural: str) -> str:
    """The response format from an Accept header: the request's own format unless the
    client prefers (or only takes) the other one."""
    if not accept.strip():
        return natural
    order = [natural] + [name for name in FORMATS if name != natural]
    best, best_q = None, 0.0
    for item in accept.split(","):
        parts = [p.strip() for p in item.split(";")]
        media = parts[0].lower()
        q = 1.0
        for param in parts[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q <= 0:
            continue
        if media in ("*/*", "application/*"):
            candidates = order
        else:
            name = _format_of(media)
            candidates = [name] if name else []
        for name in candidates:
            if q > best_q or (q == best_q and best is not None
                              and order.index(name) < order.index(best)):
                best, best_q = name, q
    if best is None:
        raise HTTPError(406, f"cannot answer in {accept.strip()!r}; the endpoint answers "
                             f"{JSON} or {JSON_LINES}")
    return best


class Endpoint:
    """The WSGI application: routes, content negotiation, errors as `{"error": ...}`."""

    def __init__(self, model: Any, settings: Settings) -> None:
        from deepar_cli.inference import InferenceConfig

        self.model = model
        self.settings = settings
        self.lines_config = settings.lines_config or InferenceConfig()
        self.watchdog = Watchdog(settings.timeout)

    def __call__(self, environ: Dict[str, Any], start_response: StartResponse
                 ) -> List[bytes]:
        try:
            status, headers, body = self.dispatch(environ)
        except HTTPError as error:
            _drain(environ, DRAIN_LIMIT)  # an unread body would reset the connection
            if error.status >= 500:
                log.error("%s %s: %s", environ.get("REQUEST_METHOD"),
                          environ.get("PATH_INFO"), error.message)
            else:
                log.info("%d %s %s: %s", error.status, environ.get("REQUEST_METHOD"),
                         environ.get("PATH_INFO"), error.message)
            status, headers = error.status, error.headers
            body = orjson.dumps({"error": error.message})
            headers = [("Content-Type", JSON)] + headers
        except Exception:  # a bug here, not the client's fault: log it, keep serving
            log.error("unexpected error answering %s %s\n%s", environ.get("REQUEST_METHOD"),
                      environ.get("PATH_INFO"), traceback.format_exc())
            status, body = 500, orjson.dumps(
                {"error": "internal server error (the server log has the details)"})
            headers = [("Content-Type", JSON)]
        if environ.get("REQUEST_METHOD") == "HEAD":
            body = b""
        phrase = HTTPStatus(status).phrase
        start_response(f"{status} {phrase}",
                       headers + [("Content-Length", str(len(body)))])
        return [body]

    def dispatch(self, environ: Dict[str, Any]) -> Tuple[int, List[Tuple[str, str]], bytes]:
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET").upper()
        if path not in ROUTES:
            raise HTTPError(404, f"no such path {path!r}; the endpoint serves "
                                 "GET /ping and POST /invocations")
        allowed = ROUTES[path]
        if method not in allowed:
            raise HTTPError(405, f"{method} is not allowed on {path}; use "
                                 f"{' or '.join(allowed)}", [("Allow", ", ".join(allowed))])
        if path == "/ping":
            return 200, [("Content-Type", JSON)], b'{"status":"ok"}'
        if path == "/execution-parameters":  # what SageMaker batch transform asks first
            mb = self.settings.max_body / (1024 * 1024)
            return 200, [("Content-Type", JSON)], orjson.dumps({
                "MaxConcurrentTransforms": self.settings.workers,
                "BatchStrategy": "MULTI_RECORD",
                "MaxPayloadInMB": int(mb) if mb == int(mb) else mb})
        with self.watchdog.watch(environ.get("gunicorn.socket"), environ):
            return self.invocations(environ)

    def invocations(self, environ: Dict[str, Any]
                    ) -> Tuple[int, List[Tuple[str, str]], bytes]:
        from deepar_cli import inference

        content_type = _media_type(environ.get("CONTENT_TYPE") or JSON)
        request_format = _format_of(content_type)
        if request_format is None:
            raise HTTPError(415, f"unsupported Content-Type {content_type!r}; send {JSON} "
                                 f"(an endpoint request) or {JSON_LINES} (one record a line)")
        answer_format = _accepted(environ.get("HTTP_ACCEPT", ""), request_format)
        body = _read_body(environ, self.settings.max_body)
        if not body.strip():
            raise HTTPError(400, "the request body is empty")
        seed = self.settings.seed
        try:
            if request_format == JSON:
                response = inference.answer_request(self.model, body, seed=seed)
                if answer_format == JSON_LINES:
                    predictions = orjson.loads(response)["predictions"]
                    response = b"".join(inference.dumps(p) + b"\n" for p in predictions)
            else:
                lines = list(inference.answer_lines(
                    self.model, body.splitlines(), self.lines_config, seed=seed))
                if answer_format == JSON_LINES:
                    response = b"".join(lines)
                else:
                    response = (b'{"predictions":[' + b",".join(line.rstrip(b"\n")
                                                                for line in lines) + b"]}")
        except (RequestError, DataError) as error:
            raise HTTPError(400, str(error)) from None
        return 200, [("Content-Type", answer_format)], response


class Watchdog:
    """Answers a request that outlives `seconds` with a JSON 504 on its socket, then ends
    the worker (os._exit), which the gunicorn master replaces.

    A thread, not a signal: Python runs signal handlers (gunicorn's own SIGABRT timeout
    among them) only between bytecodes of the main thread, and the exception they raise
    can land anywhere (an NDArray's __del__ swallows it); a thread runs while the main
    thread waits in MXNet's C code (ctypes releases the GIL), e.g. in MXNet's gamma
    sampler, which never returns on NaN parameters. gunicorn's worker timeout, a few
    seconds longer, stays as the backstop.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.cond = threading.Condition()
        self.current: Optional[Tuple[float, Any, Dict[str, Any]]] = None
        self.thread: Optional[threading.Thread] = None

    @contextmanager
    def watch(self, client: Any, environ: Dict[str, Any]) -> Iterator[None]:
        if client is None:  # not under gunicorn (a test calling the app): nothing to answer on
            yield
            return
        with self.cond:
            if self.thread is None:  # started in the worker, after the fork
                self.thread = threading.Thread(target=self._run, name="request-watchdog",
                                               daemon=True)
                self.thread.start()
            self.current = (time.monotonic() + self.seconds, client, environ)
            self.cond.notify()
        try:
            yield
        finally:
            with self.cond:
                self.current = None
                self.cond.notify()

    def _run(self) -> None:
        with self.cond:
            while True:
                if self.current is None:
                    self.cond.wait()
                    continue
                left = self.current[0] - time.monotonic()
                if left > 0:
                    self.cond.wait(left)
                    continue
                self._expire(*self.current[1:])

    def _expire(self, client: Any, environ: Dict[str, Any]) -> None:
        message = (f"the request took longer than the server's timeout of {self.seconds:g} s; "
                   "send fewer instances or samples per request")
        body = orjson.dumps({"error": message})
        head = ("HTTP/1.1 504 Gateway Timeout\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        try:
            client.settimeout(5)
            client.sendall(head + body)
            client.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        log.error("504 %s %s: %s; restarting the worker (pid %d)",
                  environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"), message, os.getpid())
        os._exit(1)


def _read_body(environ: Dict[str, Any], limit: int) -> bytes:
    """The request body, or 413 once it is known to exceed `limit` bytes."""
    stream = environ["wsgi.input"]
    length_header = environ.get("CONTENT_LENGTH") or ""
    too_large = HTTPError(413, f"the request body is larger than the endpoint's limit of "
                               f"{_size(limit)}; send fewer instances per request")
    if length_header.strip():
        try:
            length = int(length_header)
        except ValueError:
            raise HTTPError(400, f"bad Content-Length {length_header!r}") from None
        if length > limit:
            raise too_large
        return stream.read(length) if length > 0 else b""
    body = stream.read(limit + 1)  # chunked transfer: no length up front
    if len(body) > limit:
        raise too_large
    return body


def _drain(environ: Dict[str, Any], limit: int) -> None:
    """Read and discard an unwanted body so the client gets our answer, not a reset."""
    stream = environ.get("wsgi.input")
    if stream is None:
        return
    length_header = (environ.get("CONTENT_LENGTH") or "").strip()
    if length_header.isdigit() and int(length_header) == 0:
        return
    left = limit
    try:
        while left > 0:
            chunk = stream.read(min(65536, left))
            if not chunk:
                return
            left -= len(chunk)
    except Exception:  # a client gone or a broken chunked body: nothing left to save
        return


def _size(limit: int) -> str:
    mb = limit / (1024 * 1024)
    return f"{mb:g} MB" if mb >= 1 else f"{limit} bytes"


# --- the gunicorn side -----------------------------------------------------------------


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
        raise UsageError(f"--host {host}: cannot be resolved ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror})") from None


def serve(model_dir: Path, *, host: str = "127.0.0.1", port: int = 8080, workers: int = 1,
          timeout: int = TIMEOUT_S, seed: int = 42, max_payload_mb: float = MAX_PAYLOAD_MB,
          ) -> None:
    """Run the endpoint until SIGTERM/SIGINT (gunicorn then exits the process)."""
    from deepar_cli.inference import resolve_config

    check_model_folder(model_dir)
    # JSON Lines requests take their configuration from DEEPAR_INFERENCE_CONFIG, as
    # SageMaker batch transform does; a bad one stops the server here, not every request.
    lines_config = resolve_config(None, {})
    _check_address(host, port)
    settings = Settings(model_dir=model_dir, seed=seed, lines_config=lines_config,
                        max_body=int(max_payload_mb * 1024 * 1024), workers=workers,
                        timeout=timeout)
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if USER_OMP_THREADS is None:
        # Workers import MXNet after the fork: give each its share of the cores, since
        # OpenMP pools that together outnumber the cores spin against each other (8
        # clients on 2 workers of 2 threads each: 0.2 requests/s).
        os.environ["OMP_NUM_THREADS"] = str(max(1, CPU_COUNT // workers))

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
