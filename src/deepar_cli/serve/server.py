"""SageMaker's DeepAR endpoint (`GET /ping`, `POST /invocations`): what it answers.

No I/O here: the routes, the limits and every refusal's status and message, and
`forecast`, which answers an invocation's body through `deepar_cli.inference.protocol`, the path
`deepar-cli predict` takes, so the same request and seed give the same bytes from either.
`Content-Type: application/json` (also assumed when the header is absent) is an endpoint
request, `{"instances": [...], "configuration": {...}}`; `application/jsonlines` is one
record a line, configured by DEEPAR_INFERENCE_CONFIG. `Accept` picks either format for the
answer (by default the request's). Refusals are `{"error": "..."}` with a 4xx or 5xx status.

`deepar_cli.serve.http_front` reads and bounds HTTP, `deepar_cli.serve.worker_pool` runs the
forecasting processes (`deepar_cli.serve.worker`), `deepar_cli.serve.serving` puts them together.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Tuple

import orjson

from deepar_cli.errors import DataError, RequestError, UsageError
from deepar_cli.serve.negotiation import JSON, JSON_LINES, accepted, format_of, media_type

MB = 1024 * 1024
MAX_PAYLOAD_MB = 6.0  # SageMaker's real-time endpoint payload limit
TIMEOUT_S = 60  # SageMaker's invocation timeout
READ_TIMEOUT_S = 10  # a request's head, and then its body, must arrive within this
KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this
MAX_CONNECTIONS = 1000
MAX_QUEUE = 128  # complete requests waiting for a worker
MAX_BUFFER_MB = 256.0  # request bodies held in memory at once (being read or queued)
MAX_HEADER_BYTES = 16 * 1024  # the request line and headers together
MAX_HEADERS = 100
RETRY_AFTER_S = 1
ROUTES: Dict[str, Tuple[str, ...]] = {
    "/ping": ("GET", "HEAD"),
    "/invocations": ("POST",),
    "/execution-parameters": ("GET",),
}

Headers = List[Tuple[str, str]]


class HTTPError(Exception):
    """A request the endpoint refuses: status code and the message for `{"error": ...}`."""

    def __init__(self, status: int, message: str, headers: Iterable[Tuple[str, str]] = (),
                 close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)
        # The connection closes after the answer: a client too slow or whose headers
        # overflow, or a request whose end is unknown, must not be followed by another.
        self.close = close


@dataclass(frozen=True)
class Settings:
    """What the front and every worker need; built (and validated) before anything starts."""

    model_dir: Path
    seed: int = 42
    lines_config: Any = None  # InferenceConfig for JSON Lines requests (None: defaults)
    max_body: int = int(MAX_PAYLOAD_MB * MB)
    workers: int = 1
    timeout: float = TIMEOUT_S
    read_timeout: float = READ_TIMEOUT_S
    keep_alive: float = KEEP_ALIVE_S
    max_connections: int = MAX_CONNECTIONS
    max_queue: int = MAX_QUEUE
    max_buffer: int = int(MAX_BUFFER_MB * MB)


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


def route(method: str, path: str) -> None:
    """404 for an unknown path, 405 (with Allow) for a method the path does not take."""
    if path not in ROUTES:
        raise HTTPError(404, f"no such path {path!r}; the endpoint serves "
                             "GET /ping and POST /invocations")
    allowed = ROUTES[path]
    if method not in allowed:
        raise HTTPError(405, f"{method} is not allowed on {path}; use "
                             f"{' or '.join(allowed)}", [("Allow", ", ".join(allowed))])


def ping(ready: bool) -> bytes:
    """/ping's body; 503 until a worker has loaded the model."""
    if not ready:
        raise HTTPError(503, "the model is still loading; /ping answers 200 once a worker "
                             "has loaded it", [("Retry-After", str(RETRY_AFTER_S))])
    return b'{"status":"ok"}'


def execution_parameters(settings: Settings) -> bytes:
    """What SageMaker batch transform asks first."""
    mb = settings.max_body / MB
    return orjson.dumps({"MaxConcurrentTransforms": settings.workers,
                         "BatchStrategy": "MULTI_RECORD",
                         "MaxPayloadInMB": int(mb) if mb == int(mb) else mb})


def formats(content_type: str, accept: str) -> Tuple[str, str]:
    """(request format, answer format) from the headers; 415 or 406 if either is unusable."""
    media = media_type(content_type or JSON)
    request_format = format_of(media)
    if request_format is None:
        raise HTTPError(415, f"unsupported Content-Type {media!r}; send {JSON} "
                             f"(an endpoint request) or {JSON_LINES} (one record a line)")
    answer_format = accepted(accept, request_format)
    if answer_format is None:
        raise HTTPError(406, f"cannot answer in {accept.strip()!r}; the endpoint answers "
                             f"{JSON} or {JSON_LINES}")
    return request_format, answer_format


def too_large(limit: int) -> HTTPError:
    return HTTPError(413, f"the request body is larger than the endpoint's limit of "
                          f"{size_text(limit)}; send fewer instances per request")


def overloaded(what: str) -> HTTPError:
    """503 at once, with Retry-After, when a ceiling is reached."""
    return HTTPError(503, f"the server is at its limit of {what}; retry shortly",
                     [("Retry-After", str(RETRY_AFTER_S))])


def request_timeout(seconds: float) -> HTTPError:
    return HTTPError(504, f"the request took longer than the server's timeout of "
                          f"{seconds:g} s; send fewer instances or samples per request")


def read_timeout(seconds: float) -> HTTPError:
    return HTTPError(408, f"the request did not arrive within the server's read timeout of "
                          f"{seconds:g} s", close=True)


def malformed(in_body: bool, hint: int) -> HTTPError:
    """A request HTTP/1.1 cannot parse: `hint` is the parser's suggested status. The
    connection closes after it: where the request ends is not known."""
    if in_body:
        return HTTPError(400, "malformed chunked request body", close=True)
    if hint == 431:
        return headers_too_large()
    if hint == 501:
        return HTTPError(501, "unsupported Transfer-Encoding; send the body with "
                              "Content-Length or chunked", close=True)
    return HTTPError(400, "malformed HTTP request line or headers", close=True)


def headers_too_large() -> HTTPError:
    return HTTPError(431, f"the request line and headers are larger than the server's "
                          f"limit of {MAX_HEADER_BYTES // 1024} KB", close=True)


def too_many_headers() -> HTTPError:
    return HTTPError(431, f"the request has more than {MAX_HEADERS} header fields", close=True)


def framing(http_version: bytes, names: Iterable[bytes]) -> None:
    """400, closing the connection, for a request whose body's end is ambiguous and that
    h11 does not refuse itself (RFC 9112 6.1): Transfer-Encoding with Content-Length (h11
    follows the Transfer-Encoding; a proxy in front may have followed the length), or in
    an HTTP/1.0 request. h11 refuses Content-Lengths that differ or do not parse."""
    present = set(names)  # h11 gives them lower-case
    if b"transfer-encoding" not in present:
        return
    if b"content-length" in present:
        raise HTTPError(400, "the request has both Content-Length and Transfer-Encoding, "
                             "so where its body ends is ambiguous; send one of them",
                        close=True)
    if http_version == b"1.0":
        raise HTTPError(400, "Transfer-Encoding is not allowed in an HTTP/1.0 request; "
                             "send Content-Length", close=True)


def forecast(model: Any, settings: Settings, request_format: str, answer_format: str,
             body: bytes) -> bytes:
    """An invocation's answer, in `answer_format`; 400 for a request DeepAR refuses."""
    from deepar_cli.inference import protocol

    if not body.strip():
        raise HTTPError(400, "the request body is empty")
    seed = settings.seed
    try:
        if request_format == JSON:
            response = protocol.answer_request(model, body, seed=seed)
            if answer_format == JSON_LINES:
                predictions = orjson.loads(response)["predictions"]
                response = b"".join(protocol.dumps(p) + b"\n" for p in predictions)
            return response
        records = body.splitlines()
        # One chunk: the whole response is held, so the memory check must see every record.
        lines = list(protocol.answer_lines(model, records,
                                            settings.lines_config or protocol.InferenceConfig(),
                                            seed=seed, chunk=max(1, len(records))))
    except (RequestError, DataError, UsageError) as error:  # UsageError: too big to fit
        raise HTTPError(400, str(error)) from None
    if answer_format == JSON_LINES:
        return b"".join(lines)
    return b'{"predictions":[' + b",".join(line.rstrip(b"\n") for line in lines) + b"]}"


def size_text(limit: int) -> str:
    mb = limit / MB
    return f"{mb:g} MB" if mb >= 1 else f"{limit} bytes"
