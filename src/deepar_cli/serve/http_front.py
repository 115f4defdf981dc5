"""HTTP/1.1 for `deepar-cli serve`: every connection read, bounded and answered on one
asyncio loop, so a slow client costs a connection (a few kB), never a forecasting worker.

Parsing is h11's (a pure-Python HTTP/1.1 state machine); the bounds are ours:

- a request's line and headers must arrive within `read_timeout` of its first byte (of
  the connection's opening, for its first request), and its body within `read_timeout`
  of the headers; past either, 408 and the connection is closed. An idle keep-alive
  connection is closed quietly after `keep_alive`;
- the line and headers may hold `MAX_HEADER_BYTES` and `MAX_HEADERS` fields (else 431),
  and must parse (else 400); a body must fit `max_body`: a larger Content-Length gets 413
  before any of the body is read, a chunked body is cut at the limit as it streams;
- a request whose body's length is ambiguous (RFC 9112 6.1 and 6.3: Content-Length with
  Transfer-Encoding, Content-Lengths that differ, an invalid one, Transfer-Encoding in
  HTTP/1.0) gets 400, and the connection is closed after it, as after any request h11
  cannot parse: where its body ends, and so where a next request would begin, is a guess
  that a proxy in front may have made differently (request smuggling);
- past `max_connections` open connections, a new one gets 503 with Retry-After at once; a
  request finding `max_queue` requests already queued gets 503 at once, before its body is
  read; request bodies held in memory (being read or queued) never exceed `max_buffer`
  bytes in all (503 for the request that would pass it), so memory stays bounded however
  many clients send large bodies;
- `/ping` and `/execution-parameters` are answered here, from the pool's state: they never
  wait for a forecast. Only complete, size-checked bodies of `POST /invocations` with a
  usable Content-Type and Accept go to the `WorkerPool`. While one waits for its answer
  the connection is watched: a client that hangs up has its request dropped from the
  queue (or, if a worker has it, its answer discarded).

A refusal sent before its request's body was read closes the connection, after reading
(and discarding) what the client still sends for up to `LINGER_S`, so that it reads the
answer rather than a reset.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Dict, Iterable, Optional, Tuple, cast

import h11

from deepar_cli.serve.negotiation import JSON
from deepar_cli.serve.server import (
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    Headers,
    HTTPError,
    Settings,
    error_body,
    execution_parameters,
    formats,
    framing,
    headers_too_large,
    malformed,
    overloaded,
    ping,
    read_timeout,
    route,
    size_text,
    too_large,
    too_many_headers,
)
from deepar_cli.serve.worker_pool import WorkerPool

log = logging.getLogger("deepar_cli.serve")
READ_CHUNK = 64 * 1024
LINGER_S = 2.0

Answer = Tuple[int, str, bytes, Headers]


class ReadTimeout(Exception):
    """The client did not send its request within the read timeout."""


class Front:
    """The connections of one listening socket, and what they hold between them."""

    def __init__(self, settings: Settings, pool: WorkerPool) -> None:
        self.settings = settings
        self.pool = pool
        self.connections: Dict[Connection, "asyncio.Task[None]"] = {}
        self.buffered = 0  # bytes of request bodies held in memory
        self.closing = False

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                     ) -> None:
        """asyncio.start_server's callback: one connection, in its own task."""
        connection = Connection(self, reader, writer)
        if len(self.connections) >= self.settings.max_connections:
            await connection.refuse(overloaded(f"{self.settings.max_connections} "
                                               "connections"))
            return
        # start_server runs each callback in a task of its own
        self.connections[connection] = cast("asyncio.Task[None]", asyncio.current_task())
        try:
            await connection.run()
        except asyncio.CancelledError:  # by shutdown(): the connection is closed, done
            pass
        finally:
            del self.connections[connection]

    def reserve(self, size: int) -> None:
        if self.buffered + size > self.settings.max_buffer:
            raise overloaded(f"{size_text(self.settings.max_buffer)} of request bodies "
                             "in memory")
        self.buffered += size

    def release(self, size: int) -> None:
        self.buffered -= size

    async def shutdown(self, grace: float) -> None:
        """Close idle connections at once, let the others finish their request (their
        answers say Connection: close) for up to `grace` seconds, then cut them."""
        self.closing = True
        for connection, task in self.connections.items():
            if connection.idle:
                task.cancel()
        tasks = list(self.connections.values())
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.wait(tasks)


class Connection:
    """One client connection: requests read and answered in turn (HTTP/1.1 keep-alive)."""

    def __init__(self, front: Front, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.front = front
        self.settings = front.settings
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self.opened = asyncio.get_running_loop().time()
        self.idle = True  # no byte of the next request received yet
        self.reserved = 0  # bytes of self.front.max_buffer this request holds
        self.method = ""
        self.path = ""

    async def run(self) -> None:
        answered: Optional[bool] = None
        try:
            first = True
            while (answered := await self.serve_one(first)) and not self.front.closing:
                first = False
        except (OSError, asyncio.TimeoutError):  # the client went away, or stopped reading
            answered = None
        finally:
            await self.close(linger=answered is False)

    async def refuse(self, error: HTTPError) -> None:
        """Answer `error` without reading the request, and close."""
        try:
            await self.answer_error(error)
        except (OSError, asyncio.TimeoutError):
            pass
        await self.close(linger=True)

    async def serve_one(self, first: bool) -> Optional[bool]:
        """Read and answer one request: None if there was none (the client closed, or
        stayed idle), else whether the connection stays open."""
        try:
            request = await self.head(first)
            if request is None:
                return None
            return await self.respond(*await self.dispatch(request))
        except ReadTimeout:
            error = read_timeout(self.settings.read_timeout)
        except HTTPError as exc:
            error = exc
        finally:
            self.front.release(self.reserved)
            self.reserved = 0
        return await self.answer_error(error)

    async def head(self, first: bool) -> Optional[h11.Request]:
        """The next request's line and headers; None if the client closed, or sent nothing
        for `keep_alive` seconds after its previous request."""
        loop = asyncio.get_running_loop()
        self.idle = True
        self.method = self.path = ""
        event = self.next_event()
        if event is h11.NEED_DATA and not first:
            try:
                await self.read(loop.time() + self.settings.keep_alive)
            except ReadTimeout:
                return None
            event = self.next_event()
        deadline = (self.opened if first else loop.time()) + self.settings.read_timeout
        while event is h11.NEED_DATA:
            await self.read(deadline)
            event = self.next_event()
        return event if isinstance(event, h11.Request) else None

    async def dispatch(self, request: h11.Request) -> Answer:
        self.method = request.method.decode("latin-1")
        self.path = request.target.decode("latin-1").partition("?")[0]
        if len(request.headers) > MAX_HEADERS:
            raise too_many_headers()
        # h11 bounds a head that arrives in pieces; one that arrives whole is measured here.
        if len(request.target) + sum(len(n) + len(v) + 4 for n, v in request.headers) \
                > MAX_HEADER_BYTES:
            raise headers_too_large()
        framing(request.http_version, [name for name, _ in request.headers])
        route(self.method, self.path)
        if self.path == "/ping":
            return 200, JSON, ping(self.front.pool.ready > 0), []
        if self.path == "/execution-parameters":
            return 200, JSON, execution_parameters(self.settings), []
        fields: Dict[str, str] = {}
        for name, value in request.headers:
            key, text = name.decode("latin-1"), value.decode("latin-1")
            fields[key] = f"{fields[key]}, {text}" if key in fields else text
        request_format, answer_format = formats(fields.get("content-type", ""),
                                                fields.get("accept", ""))
        length = int(fields.get("content-length", 0))  # h11 has checked it
        if length > self.settings.max_body:
            raise too_large(self.settings.max_body)
        self.front.pool.check_room()
        self.hold(length)
        if self.h11.they_are_waiting_for_100_continue:
            await self.send([self.h11.send(h11.InformationalResponse(status_code=100, headers=[]))])
        loop = asyncio.get_running_loop()
        body = await self.body(loop.time() + self.settings.read_timeout)
        gone = asyncio.ensure_future(self.hang_up())
        try:
            reply = await self.front.pool.submit(request_format, answer_format, body, gone)
        finally:
            gone.cancel()
        if reply is None:
            raise ConnectionAbortedError("the client closed the connection before its answer")
        if reply.error is not None:
            self.log_refusal(reply.status, reply.error)
        return reply.status, reply.content_type, reply.body, []

    async def body(self, deadline: float) -> bytearray:
        """The request body, read until its end, `max_body` (413) or `deadline` (408).
        One growing buffer, not pieces joined at the end: a body is never held twice."""
        body = bytearray()
        while True:
            event = self.next_event()
            if event is h11.NEED_DATA:
                await self.read(deadline)
            elif isinstance(event, h11.Data):
                if len(body) + len(event.data) > self.settings.max_body:
                    raise too_large(self.settings.max_body)
                self.hold(len(body) + len(event.data))
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return body
            else:  # ConnectionClosed
                raise ConnectionResetError("the client closed the connection mid-request")

    async def hang_up(self) -> None:
        """Return once the client has closed the connection (or reset it). Bytes it sends
        first (a pipelined request) go to h11 for later, and end the watch: reading on
        would buffer however much a pipelining client sends."""
        try:
            data = await self.reader.read(READ_CHUNK)
        except OSError:
            return
        if data:
            self.h11.receive_data(data)
            await asyncio.get_running_loop().create_future()  # the client is there: never

    def hold(self, size: int) -> None:
        """Count `size` bytes of this request's body against the memory budget."""
        if size > self.reserved:
            self.front.reserve(size - self.reserved)
            self.reserved = size

    def next_event(self) -> object:
        in_body = self.h11.their_state is h11.SEND_BODY
        try:
            return self.h11.next_event()
        except h11.RemoteProtocolError as exc:
            raise malformed(in_body, exc.error_status_hint) from None

    async def read(self, deadline: float) -> None:
        """Feed h11 what the client sends next, waiting until `deadline` at most."""
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise ReadTimeout
        try:
            data = await asyncio.wait_for(self.reader.read(READ_CHUNK), left)
        except asyncio.TimeoutError:
            raise ReadTimeout from None
        self.idle = False
        self.h11.receive_data(data)

    async def answer_error(self, error: HTTPError) -> bool:
        self.log_refusal(error.status, error.message)
        return await self.respond(error.status, JSON, error_body(error.message), error.headers,
                                  close=error.close)

    def log_refusal(self, status: int, message: str) -> None:
        if status in (500, 504):
            level = logging.ERROR
        elif self.path == "/ping":  # 503 until the model is loaded: polled, not news
            level = logging.DEBUG
        elif status == 503:
            level = logging.WARNING
        else:
            level = logging.INFO
        log.log(level, "%d %s %s: %s", status, self.method or "-", self.path or "-", message)

    async def respond(self, status: int, content_type: str, body: bytes,
                      headers: Iterable[Tuple[str, str]] = (), close: bool = False) -> bool:
        """Send one answer; whether the connection can carry another request."""
        keep = not close and not self.front.closing and self.request_read()
        fields = [("Content-Type", content_type), ("Content-Length", str(len(body))),
                  *headers]
        if not keep:
            fields.append(("Connection", "close"))
        chunks = [self.h11.send(h11.Response(status_code=status, headers=fields,
                                             reason=HTTPStatus(status).phrase))]
        if self.method != "HEAD":
            chunks += self.h11.send_with_data_passthrough(h11.Data(data=body))
        chunks.append(self.h11.send(h11.EndOfMessage()))
        await self.send(chunks)
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            return True
        return False

    def request_read(self) -> bool:
        """Whether the request has been read to its end (an empty body's end needs no
        more data; a body already buffered is consumed, and dropped)."""
        try:
            while self.h11.their_state is h11.SEND_BODY:
                if self.h11.next_event() is h11.NEED_DATA:
                    break
        except h11.RemoteProtocolError:
            return False
        return self.h11.their_state is h11.DONE

    async def send(self, chunks: Iterable[Optional[bytes]]) -> None:
        """Write, waiting at most `timeout` seconds for a client that does not read."""
        self.writer.writelines([chunk for chunk in chunks if chunk])
        await asyncio.wait_for(self.writer.drain(), self.settings.timeout)

    async def close(self, linger: bool) -> None:
        """Close; with `linger`, first discard what the client still sends (for up to
        LINGER_S), so a client still sending its body reads our answer, not a reset."""
        try:
            if linger and self.writer.can_write_eof():
                self.writer.write_eof()
                loop = asyncio.get_running_loop()
                deadline = loop.time() + LINGER_S
                while (left := deadline - loop.time()) > 0:
                    if not await asyncio.wait_for(self.reader.read(READ_CHUNK), left):
                        break
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            self.writer.close()
