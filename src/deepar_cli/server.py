"""SageMaker's DeepAR endpoint (`GET /ping`, `POST /invocations`) as a WSGI application.

A plain WSGI application (`Endpoint`) answers through `deepar_cli.inference`, the path
`deepar-cli predict` takes, so the same request and seed give the same bytes from either.
`Content-Type: application/json` (also assumed when the header is absent) is an endpoint
request, `{"instances": [...], "configuration": {...}}`; `application/jsonlines` is one
record a line, configured by DEEPAR_INFERENCE_CONFIG. `Accept` picks either format for the
answer (by default the request's). Refusals are `{"error": "..."}` with a 4xx status; a bug
is logged with its traceback and answered 500 with a JSON body that holds none.

`deepar_cli.negotiation` decides the formats from the headers; `deepar_cli.gunicorn_app`
runs the application under gunicorn (`deepar-cli serve`).
"""

from __future__ import annotations

import logging
import os
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

from deepar_cli.errors import DataError, RequestError
from deepar_cli.negotiation import JSON, JSON_LINES, accepted, format_of, media_type

log = logging.getLogger("gunicorn.error")

MAX_PAYLOAD_MB = 6.0  # SageMaker's real-time endpoint payload limit
TIMEOUT_S = 60  # SageMaker's invocation timeout
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

        content_type = media_type(environ.get("CONTENT_TYPE") or JSON)
        request_format = format_of(content_type)
        if request_format is None:
            raise HTTPError(415, f"unsupported Content-Type {content_type!r}; send {JSON} "
                                 f"(an endpoint request) or {JSON_LINES} (one record a line)")
        accept = environ.get("HTTP_ACCEPT", "")
        answer_format = accepted(accept, request_format)
        if answer_format is None:
            raise HTTPError(406, f"cannot answer in {accept.strip()!r}; the endpoint answers "
                                 f"{JSON} or {JSON_LINES}")
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
