"""Thread pools sized to the CPUs a process may use (affinity mask, cgroup CPU quota), with
waiting threads asleep, and a variable the user set kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deepar_cli.threads import CPU_COUNT, available_cpus, cgroup_cpus, pool_environment

AFFINITY = len(os.sched_getaffinity(0))
VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "MXNET_CPU_PRIORITY_NTHREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME",
             "OPENBLAS_THREAD_TIMEOUT")
# What a command does first (cli.main), then the pools as the loaded libraries report them.
PROBE = """
import json, os
from deepar_cli.threads import CPU_COUNT, use_cores
use_cores()
import numpy, mxnet
from threadpoolctl import threadpool_info
print(json.dumps({"cpus": CPU_COUNT, "pools": {i["filepath"]: i["num_threads"]
                                               for i in threadpool_info()},
                  "env": {k: os.environ.get(k) for k in %r}}))
""" % (VARIABLES,)


def cgroup(tmp_path: Path, self_line: str, files: dict) -> tuple:
    """A fake cgroup mount under tmp_path: `files` maps a path under it to its text."""
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "self").write_text(self_line + "\n")
    return tmp_path, tmp_path / "self"


def probe(env: dict, preexec=None) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env},
                         preexec_fn=preexec, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cgroup_v2_quota_is_the_tightest_of_the_cgroup_and_its_ancestors(tmp_path):
    root, self_cgroup = cgroup(tmp_path, "0::/pods/job", {
        "cgroup.controllers": "cpu io memory\n", "cpu.max": "max 100000\n",
        "pods/cpu.max": "250000 100000\n", "pods/job/cpu.max": "150000 100000\n"})
    assert cgroup_cpus(root, self_cgroup) == 1.5
    assert available_cpus(root, self_cgroup) == min(AFFINITY, 1)  # rounded down
    (root / "pods/cpu.max").write_text("50000 100000\n")
    assert cgroup_cpus(root, self_cgroup) == 0.5
    assert available_cpus(root, self_cgroup) == 1  # at least 1


def test_cgroup_v1_quota_and_a_container_whose_path_is_not_under_the_mount(tmp_path):
    root, self_cgroup = cgroup(tmp_path, "4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc", {
        "cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "300000\n",
        "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n"})
    assert cgroup_cpus(root, self_cgroup) == 3.0
    assert available_cpus(root, self_cgroup) == min(AFFINITY, 3)
    # Inside the container the mount is its own cgroup, and /docker/abc is not under it.
    root, self_cgroup = cgroup(tmp_path / "inside", "4:cpu,cpuacct:/docker/abc", {
        "cpu,cpuacct/cpu.cfs_quota_us": "50000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"})
    assert cgroup_cpus(root, self_cgroup) == 0.5


def test_no_quota_leaves_the_affinity_mask(tmp_path):
    root, self_cgroup = cgroup(tmp_path, "0::/", {"cgroup.controllers": "cpu\n",
                                                  "cpu.max": "max 100000\n"})
    assert cgroup_cpus(root, self_cgroup) is None
    assert available_cpus(root, self_cgroup) == AFFINITY
    assert cgroup_cpus(tmp_path / "absent", tmp_path / "absent-self") is None


def test_processes_sharing_the_machine_split_the_cpus():
    assert pool_environment(1)["OMP_NUM_THREADS"] == str(CPU_COUNT)
    assert pool_environment(2)["OMP_NUM_THREADS"] == str(max(1, CPU_COUNT // 2))
    assert pool_environment(4 * CPU_COUNT)["OPENBLAS_NUM_THREADS"] == "1"


# The pools a command's process gets, as cli.main sizes them before the command runs.
COMMAND_POOLS = """
import os
from deepar_cli.cli import main
try:
    main([%r, "--help"])
finally:
    print(os.environ["OMP_NUM_THREADS"], os.environ["OPENBLAS_NUM_THREADS"])
"""


@pytest.mark.parametrize("command, threads", [("train", 1), ("tune", 1),
                                              ("predict", CPU_COUNT), ("serve", CPU_COUNT)])
def test_training_commands_get_one_thread_and_forecasting_ones_every_cpu(command, threads):
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    found = subprocess.run([sys.executable, "-c", COMMAND_POOLS % command], env=env,
                           capture_output=True, text=True, check=True).stdout.split()[-2:]
    assert found == [str(threads), str(threads)]


def test_one_cpu_in_the_affinity_mask_gives_every_pool_one_sleeping_thread():
    found = probe({}, preexec=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}))
    assert found["cpus"] == 1
    assert set(found["pools"].values()) == {1}
    assert len(found["pools"]) >= 2  # MXNet's OpenMP (and its OpenBLAS) and numpy's BLAS
    assert found["env"]["OMP_WAIT_POLICY"] == "PASSIVE"
    assert found["env"]["OPENBLAS_THREAD_TIMEOUT"] == "4"


@pytest.mark.skipif(AFFINITY < 2, reason="needs 2 CPUs to tell the counts apart")
def test_every_cpu_by_default_and_the_users_values_win():
    found = probe({})
    assert set(found["pools"].values()) == {CPU_COUNT}
    found = probe({"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "ACTIVE"})
    assert set(found["pools"].values()) == {1}  # the BLAS pools fall back to the user's count
    assert found["env"]["OMP_NUM_THREADS"] == "1"
    assert found["env"]["OPENBLAS_NUM_THREADS"] is None
    assert found["env"]["OMP_WAIT_POLICY"] == "ACTIVE"
    assert found["env"]["KMP_BLOCKTIME"] == "0"


def test_a_real_cgroup_v1_quota_of_one_cpu():
    """Where this machine lets a test make a cgroup (root, cgroup v1's cpu controller)."""
    mount = Path("/sys/fs/cgroup/cpu")
    folder = mount / f"deepar-cli-test-{os.getpid()}"
    try:
        folder.mkdir()
    except OSError as error:
        pytest.skip(f"cannot make a cgroup here: {error}")
    try:
        (folder / "cpu.cfs_quota_us").write_text(str(
            int((folder / "cpu.cfs_period_us").read_text())))
        found = probe({}, preexec=lambda: (folder / "cgroup.procs").write_text(
            str(os.getpid())))
    finally:
        folder.rmdir()
    assert found["cpus"] == 1
    assert set(found["pools"].values()) == {1}
