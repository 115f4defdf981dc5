"""`predict --engine ray`: batch transform spread over a Ray cluster.

Without an address a local Ray starts in this process (embedded) and stops with it; with
one (`HOST:PORT`, as `ray start --head` prints it) the work joins that cluster. Workers are
Ray actors that load the model once, from the model folder's bytes shipped through Ray's
object store, so nodes need no shared file system; the driver streams the input as shards
(`deepar_cli.inference.jobs.read_shards`) to the least busy worker, writes each shard's output
atomically as it comes back, and puts each file's shards together in order. A worker that
dies mid-shard is restarted by Ray and its shard run again (`max_restarts`,
`max_task_retries`); an output part is written only from a finished shard, so no line is
lost or repeated.

Loopback: a local Ray, or a cluster given by a loopback address, keeps every Ray process
on 127.0.0.1. Ray on Linux replaces 127.0.0.1 with the address of the interface it would
reach the internet by; RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes it keep loopback instead.
Usage statistics are off (RAY_USAGE_STATS_ENABLED=0) and no dashboard runs.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from deepar_cli.errors import DeepARCliError, UsageError
from deepar_cli.inference.jobs import FileJob, Shard, read_shards
from deepar_cli.inference.protocol import InferenceConfig
from deepar_cli.model.modelfolder import Model

INSTALL_HINT = '--engine ray needs Ray, which is not installed: pip install "deepar-cli[ray]"'
CONNECT_TIMEOUT_S = 5.0
# Shards given to one worker at once: one running, one waiting, so a worker never idles.
IN_FLIGHT_PER_WORKER = 2


@dataclass(frozen=True)
class RayOptions:
    """How to spread a batch transform over Ray."""

    address: Optional[str] = None  # HOST:PORT of a running cluster; None: a local Ray
    workers: Optional[int] = None  # None: one per `worker_cpus` CPUs of the cluster
    worker_cpus: int = 1  # CPUs (and OpenMP threads) per worker
    shard_lines: int = 1000  # records per shard
    max_retries: int = 3  # restarts of a dead worker, and re-runs of its shard


def check(options: RayOptions) -> None:
    """Fail fast, before the model loads: Ray must be installed and the address must
    answer. Also sets Ray's environment (loopback, no usage statistics), which Ray reads
    when first imported."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    host_port = _split(options.address) if options.address else None
    if host_port is None or _is_loopback(host_port[0]):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    if host_port is not None:
        try:
            socket.create_connection(host_port, timeout=CONNECT_TIMEOUT_S).close()
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise UsageError(f"--address {options.address}: no Ray cluster answers there "
                             f"({reason}); start one with `ray start --head`, or leave out "
                             "--address for a local Ray") from None


def _split(address: str) -> Tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f'--address "{address}" is not HOST:PORT (e.g. 127.0.0.1:6379)')
    return host.strip("[]"), int(port)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass(frozen=True)
class RayEngine:
    """The batch-transform engine (deepar_cli.inference.batch.Engine) on Ray."""

    options: RayOptions

    def run(self, model: Model, jobs: List[FileJob], config: InferenceConfig, *, seed: int,
            config_given: bool) -> int:
        """Transform the jobs on Ray; return the predictions written. A Ray already
        initialized in this process is used as it is."""
        return _on_ray(model, jobs, config, seed, config_given, self.options)


def _on_ray(model: Model, jobs: List[FileJob], config: InferenceConfig, seed: int,
            config_given: bool, options: RayOptions) -> int:
    check(options)
    import ray

    started = not ray.is_initialized()
    if started:
        quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
        if options.address:
            ray.init(address=options.address, **quiet)
        else:
            from deepar_cli.threads import CPU_COUNT

            cpus = options.workers * options.worker_cpus if options.workers else CPU_COUNT
            ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=cpus,
                     **quiet)
    try:
        return _run(ray, model, jobs, config, seed, config_given, options)
    finally:
        if started:
            ray.shutdown()


def _run(ray: Any, model: Model, jobs: List[FileJob], config: InferenceConfig, seed: int,
         config_given: bool, options: RayOptions) -> int:
    cpus = int(ray.cluster_resources().get("CPU", 0))
    workers = options.workers or max(1, cpus // options.worker_cpus)
    if workers * options.worker_cpus > cpus:
        raise UsageError(f"{workers} workers x {options.worker_cpus} CPUs need "
                         f"{workers * options.worker_cpus} CPUs; the Ray cluster has {cpus}")
    files = ray.put(_folder_bytes(model.path))
    actor = ray.remote(ShardWorker).options(num_cpus=options.worker_cpus,
                                            max_restarts=options.max_retries,
                                            max_task_retries=options.max_retries)
    actors = [actor.remote(options.worker_cpus) for _ in range(workers)]
    try:
        with tempfile.TemporaryDirectory(prefix="deepar-cli-shards-") as staging:
            return _dispatch(ray, actors, jobs, Path(staging), [files],
                             (config, seed, config_given), options.shard_lines)
    finally:
        for a in actors:
            ray.kill(a)


def _dispatch(ray: Any, actors: List[Any], jobs: List[FileJob], staging: Path,
              model_files: List[Any], settings: Tuple[InferenceConfig, int, bool],
              shard_lines: int) -> int:
    """Keep every worker busy with shards; write each result as a part file; assemble the
    jobs' parts in order as they complete. On a library error, finish the shards already
    running and raise the error of the earliest shard: the error a single process meets
    first, with the outputs it would have written before it."""
    from deepar_cli.atomic import atomic_file

    running: Dict[Any, Tuple[Any, int]] = {}  # result ref -> (shard, worker)
    load = [0] * len(actors)
    parts: Dict[int, int] = {}  # job -> parts written
    totals: Dict[int, int] = {}  # job -> its number of shards, once its last is read
    errors: List[Tuple[Tuple[int, int], DeepARCliError]] = []
    count = 0
    assembled = 0  # jobs [0, assembled) are written
    shards = read_shards(jobs, shard_lines)
    exhausted = False
    while running or not (exhausted or errors):
        while not (exhausted or errors) and len(running) < IN_FLIGHT_PER_WORKER * len(actors):
            shard = next(shards, None)
            if shard is None:
                exhausted = True
                break
            worker = load.index(min(load))
            load[worker] += 1
            ref = actors[worker].transform.remote(shard, model_files, *settings)
            running[ref] = (shard, worker)
            if shard.last:
                totals[shard.job] = shard.index + 1
        if not running:
            break
        [ref], _ = ray.wait(list(running), num_returns=1)
        shard, worker = running.pop(ref)
        load[worker] -= 1
        try:
            data, written = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            if not isinstance(exc.cause, DeepARCliError):
                raise exc.cause from None
            errors.append(((shard.job, shard.index), exc.cause))
            continue
        with atomic_file(staging / f"{shard.job}-{shard.index}.part") as tmp:
            tmp.write_bytes(data)
        count += written
        parts[shard.job] = parts.get(shard.job, 0) + 1
        # Outputs are assembled in input order and none at or past a failed file: what a
        # single process leaves.
        failed = min((job for (job, _), _ in errors), default=len(jobs))
        while assembled < failed and assembled in totals and parts.get(
                assembled) == totals[assembled]:
            _assemble(staging, assembled, totals[assembled], jobs[assembled].target)
            assembled += 1
    if errors:
        raise min(errors, key=lambda item: item[0])[1]
    return count


def _assemble(staging: Path, job: int, total: int, target: str) -> None:
    """Concatenate a job's parts in order into its output (atomically) or stdout."""
    from deepar_cli.atomic import atomic_file

    names = [staging / f"{job}-{index}.part" for index in range(total)]
    if target == "-":
        for name in names:
            sys.stdout.buffer.write(name.read_bytes())
        sys.stdout.buffer.flush()
    else:
        with atomic_file(Path(target)) as tmp, open(tmp, "wb") as sink:
            for name in names:
                with open(name, "rb") as part:
                    shutil.copyfileobj(part, sink)
    for name in names:
        name.unlink()


def _folder_bytes(folder: Path) -> Dict[str, bytes]:
    """A model folder's files by relative path, to ship to workers."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


class ShardWorker:
    """A Ray actor: loads the model on its first shard, then transforms shards.

    The model folder's bytes come as an object reference with every shard (a reference
    inside a list, which Ray passes as it is), so a worker Ray restarts loads the model
    again on the shard it re-runs."""

    def __init__(self, cpus: int) -> None:
        from deepar_cli.threads import use_cpus

        use_cpus(cpus)  # MXNet sizes its pools once, on import: a thread per CPU Ray gave us
        self.model: Optional[Model] = None

    def transform(self, shard: Shard, model_files: List[Any], config: InferenceConfig,
                  seed: int, config_given: bool) -> Tuple[bytes, int]:
        from deepar_cli.inference.protocol import transform_shard

        if self.model is None:
            self.model = _load(model_files[0])
        return transform_shard(self.model, shard.data, config, seed=seed, name=shard.name,
                               first_line=shard.first_line, whole=shard.whole,
                               config_given=config_given)


def _load(files_ref: Any) -> Model:
    """Write the shipped model folder to a temporary folder and load it from there."""
    import ray

    from deepar_cli.model import modelfolder

    folder = Path(tempfile.mkdtemp(prefix="deepar-cli-model-"))
    try:
        for name, data in ray.get(files_ref).items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
        return modelfolder.load(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
