"""Thread pools sized to the CPUs this process may use, and threads that sleep when they wait.

Set in the environment when a command starts, before MXNet or numpy is first imported: MXNet
reads OMP_NUM_THREADS once, at import (left to its own guess it takes half the cores the
affinity mask shows, and no cgroup quota), and OpenBLAS reads its variables when it loads.

* The count, CPU_COUNT, is the CPUs in the affinity mask, capped by the cgroup CPU quota
  (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`, the tightest of the
  process's cgroup and its ancestors), rounded down, at least 1: a container limited to 2
  CPUs on a 64-core host gets 2 threads, not 64 that fight over 2 CPUs' time.
* Every pool follows it: MXNet's OpenMP threads (which also run the OpenBLAS MXNet bundles),
  numpy's OpenBLAS or MKL, and MXNet's engine threads for prioritized work (its engine runs
  operators on 1 CPU worker thread by default, which this keeps).
* A waiting thread sleeps instead of spinning (OMP_WAIT_POLICY=PASSIVE for GNU and LLVM
  OpenMP, KMP_BLOCKTIME=0 for Intel's, OpenBLAS's shortest thread timeout): a spinning
  thread takes the core another thread, or another process, needs. On a busy 2-core
  machine two spinning OpenMP threads made a forecast 5 times slower than one thread.

A variable the user set is never changed; a user's OMP_NUM_THREADS also sizes the BLAS
pools (the libraries fall back to it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional

CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")
_COUNT = "OMP_NUM_THREADS"
# Pools that fall back to OMP_NUM_THREADS when their own variable is unset.
_BLAS_COUNTS = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_ENGINE_PRIORITY = ("MXNET_CPU_PRIORITY_NTHREADS", 4)  # MXNet's default: 4 threads
_SLEEP = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0",
          "OPENBLAS_THREAD_TIMEOUT": "4"}  # 2**4 cycles, the least OpenBLAS takes
_VARIABLES = (_COUNT, *_BLAS_COUNTS, _ENGINE_PRIORITY[0], *_SLEEP)
_user_values: Optional[Dict[str, str]] = None


def _read_quota(folder: Path) -> Optional[float]:
    """The CPUs a cgroup folder's own quota allows, or None (no quota, no such file)."""
    try:
        fields = (folder / "cpu.max").read_text().split()  # v2: "max 100000", "50000 100000"
    except OSError:
        try:
            fields = [(folder / name).read_text().strip()
                      for name in ("cpu.cfs_quota_us", "cpu.cfs_period_us")]  # v1: -1 is none
        except OSError:
            return None
    try:
        quota, period = float(fields[0]), float(fields[1])
    except (ValueError, IndexError):  # "max", or a file not as the kernel writes it
        return None
    return quota / period if quota > 0 and period > 0 else None


def _cgroup_folders(root: Path, self_cgroup: Path) -> List[Path]:
    """The folders holding this process's CPU controller files, its cgroup's first, then its
    ancestors' up to the mount point (inside a container the path may not exist under the
    mount, which is then the container's own cgroup)."""
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return []
    folders: List[Path] = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":  # v2's unified hierarchy, "0::/path"
            mount = root if (root / "cgroup.controllers").exists() else root / "unified"
        elif "cpu" in controllers.split(","):  # v1, mounted as cpu or cpu,cpuacct
            mount = next((m for m in (root / controllers, root / "cpu") if m.is_dir()), None)
            if mount is None:
                continue
        else:
            continue
        folder = mount / path.strip().lstrip("/")
        while True:
            folders.append(folder)
            if folder == mount or folder.parent == folder:
                break
            folder = folder.parent
        if mount not in folders:
            folders.append(mount)
    return folders


def cgroup_cpus(root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> Optional[float]:
    """The CPUs (quota / period) the cgroup CPU quotas allow this process, the tightest of
    its cgroup and its ancestors, in either cgroup version; None when none is set."""
    quotas = [q for q in map(_read_quota, _cgroup_folders(root, self_cgroup)) if q is not None]
    return min(quotas) if quotas else None


def available_cpus(root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> int:
    """The CPUs this process may use: its affinity mask capped by its cgroup CPU quota,
    rounded down, at least 1 (what Python 3.13's os.process_cpu_count does not yet cap)."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    quota = cgroup_cpus(root, self_cgroup)
    if quota is not None:
        count = min(count, int(quota))
    return max(1, count)


CPU_COUNT = available_cpus()


def _user() -> Dict[str, str]:
    """The variables as the user set them, read before deepar-cli first set any."""
    global _user_values
    if _user_values is None:
        _user_values = {name: os.environ[name] for name in _VARIABLES if name in os.environ}
    return _user_values


def user_threads() -> Optional[str]:
    """OMP_NUM_THREADS as the user set it before deepar-cli touched it, or None."""
    return _user().get(_COUNT)


def _environment(threads: int, kept: Mapping[str, str]) -> Dict[str, str]:
    """`threads` threads in each pool and waiting threads asleep, less the variables in
    `kept`; a kept OMP_NUM_THREADS also sizes the BLAS pools, which fall back to it."""
    chosen = {_COUNT: str(threads), **{name: str(threads) for name in _BLAS_COUNTS},
              _ENGINE_PRIORITY[0]: str(min(threads, _ENGINE_PRIORITY[1])), **_SLEEP}
    if _COUNT in kept:
        for name in _BLAS_COUNTS:
            del chosen[name]
    return {name: value for name, value in chosen.items() if name not in kept}


def pool_environment(share: int = 1, *, training: bool = False) -> Dict[str, str]:
    """The variables that give one of `share` processes sharing the CPUs about
    CPU_COUNT / share threads in each pool (every CPU for one process), with waiting threads
    asleep; those the user set are left out, so their values stay.

    A `training` process gets one thread: DeepAR's training operators are too small to pay
    for waking a sleeping team at each one. On the 2-core machine, the notebook's training
    ran at 210-250 samples/s with two sleeping threads, 660-680 with two spinning ones and
    540-550 with one; beside a busy core at 410, 255-270 and 430-470. Forecasting gains from
    the team (200 series x 100 samples: 3.8-4.4 s with two sleeping threads, 5.3-5.7 s with
    one; 4.7-5.1 s and 5.4-6.3 s beside a busy core)."""
    return _environment(1 if training else max(1, CPU_COUNT // share), _user())


def use_cores(share: int = 1, *, training: bool = False) -> None:
    """Size this process's pools (and its children's) as one of `share` processes sharing
    the CPUs, or as a training process: see `pool_environment`. Takes effect on pools not
    yet started."""
    os.environ.update(pool_environment(share, training=training))


def use_cpus(cpus: int) -> None:
    """Size the pools of a process that a scheduler gave `cpus` CPUs (a Ray worker): that
    many threads whatever count it inherited; waiting threads asleep unless its environment
    says otherwise."""
    os.environ.update(_environment(cpus, {n: v for n, v in os.environ.items() if n in _SLEEP}))
