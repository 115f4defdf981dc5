"""The forecasting processes of `deepar-cli serve`, seen from the front's event loop.

`WorkerPool` keeps `settings.workers` processes (`deepar_cli.serve.worker`), each started as a
fresh interpreter (`python -m deepar_cli.serve.worker`: spawned, never forked from a process
that holds MXNet) and in its own session, so a Ctrl-C reaches only the front, which
stops them in order. Complete request bodies wait in one queue (at most
`settings.max_queue`; past it, 503 at once); each process takes the next one when it is
free. A request whose client hangs up leaves the queue at once (no worker spends time on
it, and its place is free for the next); if a worker already has it, its answer is
dropped. A request may wait `settings.timeout` seconds in the queue, and then take as long
on a worker; past either the client gets 504, and past the second the process is killed
and replaced (a process stuck in MXNet's C code cannot be interrupted any other way). The
two are apart so that a long queue never gets a worker killed over time it did not use.
A process that dies is replaced; one that cannot load the model stops the endpoint
(`ModelError`).
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import sys
from collections import deque
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Deque, List, Optional, Tuple, Union, cast

from deepar_cli.errors import ModelError
from deepar_cli.serve.server import HTTPError, Settings, overloaded, request_timeout
from deepar_cli.serve.worker import FRAME, Reply, frame

log = logging.getLogger("deepar_cli.serve")
STOP_S = 10  # a worker asked to stop (stdin closed) is killed after this


@dataclass(eq=False)  # compared by identity: the queue removes a job by `is`
class PendingRequest:
    """An invocation's body waiting for a worker, and the future its answer settles."""

    formats: Tuple[str, str]  # the request's, the answer's
    body: bytearray
    wait_until: float  # the latest a worker may take it
    future: "asyncio.Future[Reply]"
    started: bool = field(default=False)

    def settle(self, outcome: Union[Reply, HTTPError]) -> None:
        """Answer the job, unless its client has gone (the future was cancelled)."""
        if self.future.done():
            return
        if isinstance(outcome, HTTPError):
            self.future.set_exception(outcome)
        else:
            self.future.set_result(outcome)


class Process:
    """One worker process and its pipes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        # started with stdin and stdout as pipes (`start`), so neither is None
        self.stdin = cast(asyncio.StreamWriter, proc.stdin)
        self.stdout = cast(asyncio.StreamReader, proc.stdout)
        self.exited = asyncio.ensure_future(proc.wait())

    @classmethod
    async def start(cls, settings: Settings) -> "Process":
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "deepar_cli.serve.worker", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, start_new_session=True)
        process = cls(proc)
        try:
            (status, detail), _ = await process.exchange(settings)
        except (ConnectionError, asyncio.IncompleteReadError):
            code = await proc.wait()
            raise ModelError(f"a worker exited while loading the model (exit code {code})"
                             ) from None
        except BaseException:  # cancelled (the endpoint is stopping): no orphan
            process.kill()
            raise
        if status != "ready":
            raise ModelError(detail)
        return process

    async def exchange(self, message: object, payload: bytes = b""
                       ) -> Tuple[Any, bytes]:
        """Send one message (deepar_cli.serve.worker's framing) and read the answer."""
        self.stdin.writelines(frame(message, payload))
        await self.stdin.drain()
        size, length = FRAME.unpack(await self.stdout.readexactly(FRAME.size))
        meta = pickle.loads(await self.stdout.readexactly(size))
        return meta, await self.stdout.readexactly(length)

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()

    async def stop(self) -> None:
        """Close stdin (the worker's signal to exit); kill it if it lingers."""
        self.stdin.close()
        try:
            await asyncio.wait_for(asyncio.shield(self.exited), STOP_S)
        except asyncio.TimeoutError:
            self.kill()
            await self.exited


class WorkerPool:
    """`settings.workers` forecasting processes fed from one bounded queue."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Jobs no worker has taken yet, each with a client that still waits; `arrived` is
        # set when one is added (and cleared by an idle slot that finds the queue empty).
        self.queue: Deque[PendingRequest] = deque()
        self.arrived = asyncio.Event()
        self.ready = 0  # processes with the model loaded
        # Set when the endpoint cannot go on: a worker could not load the model (ModelError)
        # or a bug here.
        self.failed: "asyncio.Future[Exception]" = asyncio.get_running_loop().create_future()
        self.slots: List[asyncio.Task] = []
        self.processes: List[Process] = []
        self.stopping = False

    def start(self) -> None:
        self.slots = [asyncio.ensure_future(self._slot()) for _ in range(self.settings.workers)]

    def check_room(self) -> None:
        """503 at once if the queue is full (called before a body is read, and after)."""
        if len(self.queue) >= self.settings.max_queue:
            raise overloaded(f"{self.settings.max_queue} queued requests")

    async def submit(self, request_format: str, answer_format: str, body: bytearray,
                     gone: "asyncio.Future[None]") -> Optional[Reply]:
        """Queue a request and wait for its answer: a worker's, 504 at the deadline, or
        None if `gone` completes first (the client hung up): then the request leaves the
        queue unforecast, or, if a worker has it, its answer is dropped."""
        self.check_room()
        loop = asyncio.get_running_loop()
        job = PendingRequest((request_format, answer_format), body,
                             loop.time() + self.settings.timeout, loop.create_future())
        self.queue.append(job)
        self.arrived.set()
        either = {job.future, gone}
        try:
            await asyncio.wait(either, timeout=self.settings.timeout,
                               return_when=asyncio.FIRST_COMPLETED)
            if job.started and not gone.done():  # answered within its run's timeout
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if job.future.done():
                return job.future.result()
            if gone.done():
                log.info("POST /invocations: the client closed the connection before its "
                         "answer; %s", "its forecast's answer will be dropped" if job.started
                         else "dropped from the queue, unforecast")
                return None
        finally:
            if not job.started:
                with suppress(ValueError):  # not there if a slot found it past its deadline
                    self.queue.remove(job)
            job.future.cancel()  # a no-op once answered; else a late answer is dropped
        raise request_timeout(self.settings.timeout)

    async def _take(self) -> PendingRequest:
        """The next queued job, once there is one."""
        while not self.queue:
            self.arrived.clear()
            await self.arrived.wait()
        return self.queue.popleft()

    async def _slot(self) -> None:
        """Keep one worker process alive and feed it jobs."""
        try:
            await self._keep_one()
        except Exception as error:
            if not isinstance(error, ModelError):
                log.exception("the worker pool failed")
            if not self.failed.done():
                self.failed.set_result(error)

    async def _keep_one(self) -> None:
        while True:
            process = await Process.start(self.settings)
            log.info("worker (pid %d) has loaded the model", process.proc.pid)
            self.processes.append(process)
            self.ready += 1
            try:
                await self._feed(process)
            finally:
                self.ready -= 1
                if not self.stopping:  # else stop() ends it in order
                    self.processes.remove(process)
                    process.kill()

    async def _feed(self, process: Process) -> None:
        """Jobs to one process until it dies (or is killed over a deadline)."""
        loop = asyncio.get_running_loop()
        while True:
            getter = asyncio.ensure_future(self._take())
            await asyncio.wait({getter, process.exited}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                log.error("worker (pid %d) exited (code %s); starting another",
                          process.proc.pid, process.proc.returncode)
                return
            job = getter.result()
            if job.wait_until <= loop.time():  # its client has its 504
                continue
            job.started = True
            try:
                (status, content_type, error), body = await asyncio.wait_for(
                    process.exchange(job.formats, job.body), self.settings.timeout)
            except asyncio.TimeoutError:
                log.error("worker (pid %d) overran the timeout of %g s; killing it and "
                          "starting another", process.proc.pid, self.settings.timeout)
                job.settle(request_timeout(self.settings.timeout))
                return
            except (ConnectionError, asyncio.IncompleteReadError):
                code = await process.exited
                log.error("worker (pid %d) died answering a request (exit code %s); "
                          "starting another", process.proc.pid, code)
                job.settle(HTTPError(500, "the worker forecasting this request died (the "
                                          "server log has the details)"))
                return
            job.settle(Reply(status, content_type, body, error))

    async def stop(self) -> None:
        """Stop every process; the front has answered (or given up on) every request."""
        self.stopping = True
        for slot in self.slots:
            slot.cancel()
        await asyncio.gather(*self.slots, return_exceptions=True)
        await asyncio.gather(*(p.stop() for p in list(self.processes)),
                             return_exceptions=True)
