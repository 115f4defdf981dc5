"""A forecasting worker of `deepar-cli serve`: `python -m deepar_cli.serve.worker`.

Started by `deepar_cli.serve.worker_pool` as a fresh interpreter (never forked from a process
that holds MXNet), it loads the model once and then answers one invocation at a time.
It talks to the front over its stdin and stdout in messages: a 16-byte header (two
lengths), a small pickled object, then raw bytes (a body, not copied through pickle). The
first message in is the `Settings`; the first out is `("ready", pid)` or `("error",
message)` (the model could not be loaded). Then each message in is `(request_format,
answer_format)` with the request body, and each out a `Reply`'s status, content type and
error, with the answer's body. The worker ignores SIGINT and SIGTERM: the front decides
when it stops (it closes stdin) or dies (SIGKILL).
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import struct
import sys
import traceback
from typing import IO, Any, List, NamedTuple, Optional, Tuple

from deepar_cli.errors import ModelError
from deepar_cli.serve.negotiation import JSON
from deepar_cli.serve.server import HTTPError, Settings, error_body, forecast

FRAME = struct.Struct("!QQ")  # lengths of the pickled object and of the raw bytes
LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
log = logging.getLogger("deepar_cli.serve")


def setup_log() -> None:
    """The endpoint's log (the front's and every worker's) on stderr."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


class Reply(NamedTuple):
    """A worker's answer to one invocation; `error` is the refusal's message, if any."""

    status: int
    content_type: str
    body: bytes
    error: Optional[str] = None


def frame(obj: Any, payload: bytes = b"") -> List[bytes]:
    """One message, as the pieces to write."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return [FRAME.pack(len(data), len(payload)), data, payload]


def answer(model: Any, settings: Settings, request_format: str, answer_format: str,
           body: bytes) -> Reply:
    """One invocation; a bug is logged with its traceback and answered 500 without it."""
    try:
        return Reply(200, answer_format,
                     forecast(model, settings, request_format, answer_format, body))
    except HTTPError as error:
        return Reply(error.status, JSON, error_body(error.message), error.message)
    except Exception:
        log.error("unexpected error answering POST /invocations\n%s", traceback.format_exc())
        message = "internal server error (the server log has the details)"
        return Reply(500, JSON, error_body(message), message)


def _read(stream: IO[bytes]) -> Optional[Tuple[Any, bytes]]:
    head = stream.read(FRAME.size)
    if len(head) < FRAME.size:
        return None  # the front closed our stdin: stop
    size, payload = FRAME.unpack(head)
    return pickle.loads(stream.read(size)), stream.read(payload)


def _write(stream: IO[bytes], obj: Any, payload: bytes = b"") -> None:
    stream.writelines(frame(obj, payload))
    stream.flush()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Frames go to the original stdout; anything a library prints goes to the log.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    setup_log()
    settings: Settings = _read(sys.stdin.buffer)[0]  # type: ignore[index]
    from deepar_cli.model import modelfolder

    try:
        model = modelfolder.load(settings.model_dir)
    except ModelError as error:
        _write(out, ("error", str(error)))
        return
    _write(out, ("ready", os.getpid()))
    while (request := _read(sys.stdin.buffer)) is not None:
        (request_format, answer_format), body = request
        reply = answer(model, settings, request_format, answer_format, body)
        # Plain values: this module runs as __main__, whose classes the front cannot unpickle.
        _write(out, (reply.status, reply.content_type, reply.error), reply.body)


if __name__ == "__main__":
    main()
