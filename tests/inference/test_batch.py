"""Batch transform at scale: a folder in, a folder out (deepar_cli.inference.batch and
.jobs), shards, and `predict --engine ray` (deepar_cli.inference.ray_engine) giving the
single process's bytes."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List, Optional

import pytest

from deepar_cli.cli import main
from deepar_cli.inference import batch, jobs, protocol
from deepar_cli.inference.protocol import InferenceConfig
from helpers import START, write_lines

# As SageMaker's batch transform takes it: a folder may hold endpoint requests, which carry
# their own configuration, so the JSON Lines files' comes from the environment.
SAMPLES = {protocol.CONFIG_ENV: json.dumps({"num_samples": 4, "output_types": [
    "mean", "quantiles", "samples"]})}
BAD_TARGET = '"target" must be a list of numbers, got 3'


@pytest.fixture(autouse=True)
def no_env_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(protocol.CONFIG_ENV, raising=False)


@pytest.fixture(scope="module")
def records(tiny_data: SimpleNamespace) -> List[Dict[str, Any]]:
    """40 distinct records: the tiny train series at several levels."""
    base = [r.to_json() for r in tiny_data.train_records]
    return [{"start": START, "target": [v * (1 + k // len(base)) for v in
                                        base[k % len(base)]["target"]]} for k in range(40)]


def predict(runner, model_dir: Path, source: Path, out: Path, *args: str,
            env: Optional[Dict[str, str]] = None):
    return runner.invoke(main, ["predict", "--model-dir", str(model_dir), "--input",
                                str(source), "--output", str(out), *args], env=env)


def ten_lines(records: List[Dict[str, Any]], folder: Path, bad_line: int = 0) -> Path:
    """A 10-line file of 8 records and 2 blank lines (lines 4 and 10); `bad_line` (a
    record's line number) gets a record with a bad target."""
    lines: List[Any] = list(records[:3]) + [""] + list(records[3:8]) + [""]
    if bad_line:
        lines[bad_line - 1] = {"start": START, "target": 3}
    return write_lines(folder / "ten.jsonl", lines)


def make_folder(records: List[Dict[str, Any]], folder: Path) -> Path:
    """part-0.jsonl (3 records), part-1.jsonl (ten lines), sub/part-2.json.gz (2), a
    request file, and names a SageMaker channel skips."""
    write_lines(folder / "part-0.jsonl", records[10:13])
    ten_lines(records, folder).rename(folder / "part-1.jsonl")
    (folder / "sub").mkdir()
    with gzip.open(folder / "sub" / "part-2.json.gz", "wt") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in records[13:15]))
    (folder / "request.json").write_text(json.dumps({
        "instances": records[15:17], "configuration": {"num_samples": 3}}))
    write_lines(folder / ".hidden.json", ["not json"])
    (folder / "_SUCCESS").write_text("")
    (folder / "notes.txt").write_text("not data")
    return folder


OUTPUTS = ["part-0.jsonl.out", "part-1.jsonl.out", "request.json.out",
           "sub/part-2.json.gz.out"]


def tree(folder: Path) -> List[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# ------------------------------------------------------------------ folder mode (local)


def test_folder_in_folder_out(runner, tiny_model, records, tmp_path) -> None:
    source = make_folder(records, tmp_path / "in")
    out = tmp_path / "out"
    result = predict(runner, tiny_model.dir, source, out, env=SAMPLES)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote 15 predictions to 4 files in {out}\n"
    assert tree(out) == OUTPUTS
    # each output is what predict writes for that file alone, in input order
    for name in OUTPUTS:
        alone = tmp_path / "alone.out"
        result = predict(runner, tiny_model.dir, source / name[:-len(".out")], alone,
                         env=SAMPLES)
        assert result.exit_code == 0, result.output
        assert (out / name).read_bytes() == alone.read_bytes(), name
    assert len((out / "part-1.jsonl.out").read_text().splitlines()) == 8
    # the request's own configuration: 3 samples, SageMaker's default output types
    [first, _] = json.loads((out / "request.json.out").read_text())["predictions"]
    assert first.keys() == {"mean", "quantiles"}


def test_folder_error_names_file_and_line(runner, tiny_model, records, tmp_path) -> None:
    source = tmp_path / "in"
    write_lines(source / "a.jsonl", records[:2])
    ten_lines(records, source, bad_line=8)
    out = tmp_path / "out"
    result = predict(runner, tiny_model.dir, source, out)
    assert result.exit_code == 65
    assert result.stderr == f"Error: {source / 'ten.jsonl'}:8: {BAD_TARGET}\n"
    # the finished file is complete; the failed one is absent, nothing half-written
    assert tree(out) == ["a.jsonl.out"]
    assert len((out / "a.jsonl.out").read_text().splitlines()) == 2


def test_folder_usage_and_output_errors(runner, tiny_model, records, tmp_path) -> None:
    source = tmp_path / "in"
    write_lines(source / "a.jsonl", records[:1])
    result = predict(runner, tiny_model.dir, source, Path("-"))
    assert result.exit_code == 64
    assert result.stderr == (f"Error: {source} is a folder: --output must be a folder too "
                             "(one <name>.out per input file), not -\n")
    blocked = tmp_path / "file"
    blocked.write_text("")
    result = predict(runner, tiny_model.dir, source, blocked)
    assert result.exit_code == 73
    assert result.stderr == (f"Error: {blocked}: cannot be written ({blocked} is a file, "
                             "not a folder)\n")
    (tmp_path / "empty").mkdir()
    result = predict(runner, tiny_model.dir, tmp_path / "empty", tmp_path / "out")
    assert result.exit_code == 65
    result = predict(runner, tiny_model.dir, source, tmp_path / "out", "--shard-lines", "3")
    assert result.exit_code == 64
    assert result.stderr == "Error: --shard-lines applies to --engine ray only\n"


def test_gzip_file_in_and_broken_gzip(runner, tiny_model, records, tmp_path) -> None:
    plain = write_lines(tmp_path / "a.jsonl", records[:2])
    packed = tmp_path / "a.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    for name, source in (("plain", plain), ("packed", packed)):
        result = predict(runner, tiny_model.dir, source, tmp_path / f"{name}.out")
        assert result.exit_code == 0, result.output
    assert (tmp_path / "plain.out").read_bytes() == (tmp_path / "packed.out").read_bytes()
    broken = tmp_path / "broken.json.gz"
    broken.write_bytes(packed.read_bytes()[:-12])
    result = predict(runner, tiny_model.dir, broken, tmp_path / "broken.out")
    assert result.exit_code == 65
    assert result.stderr.startswith(f"Error: {broken}: not a readable gzip file (")
    assert not (tmp_path / "broken.out").exists()


# ------------------------------------------------------------------ shards (no Ray needed)


def test_shard_boundaries_inside_a_file(tiny_model, records, tmp_path) -> None:
    source = ten_lines(records, tmp_path)
    file_jobs = jobs.plan(source, tmp_path / "out.jsonl")
    shards = list(jobs.read_shards(file_jobs, 3))
    # records on lines 1-3 | 5-7 | 8-9; blank lines ride with the record before them
    assert [(s.index, s.first_line, s.data.count(b"\n"), s.last) for s in shards] == [
        (0, 1, 4, False), (1, 5, 3, False), (2, 8, 3, True)]
    assert b"".join(s.data for s in shards) == source.read_bytes()
    config = InferenceConfig.parse({"output_types": ["mean", "samples"], "num_samples": 3})
    parts = [protocol.transform_shard(tiny_model.model, s.data, config, seed=7, name=s.name,
                                       first_line=s.first_line, whole=s.whole)
             for s in shards]
    assert [count for _, count in parts] == [3, 3, 2]
    protocol.run_batch_transform(tiny_model.model, source, tmp_path / "whole.out", config,
                                  seed=7)
    assert b"".join(data for data, _ in parts) == (tmp_path / "whole.out").read_bytes()


def test_shard_errors_name_the_line_of_the_file(tiny_model, records, tmp_path) -> None:
    source = ten_lines(records, tmp_path, bad_line=8)
    shard = list(jobs.read_shards(jobs.plan(source, tmp_path / "o"), 3))[2]
    with pytest.raises(protocol.RequestError) as info:
        protocol.transform_shard(tiny_model.model, shard.data, InferenceConfig(), seed=1,
                                  name=shard.name, first_line=shard.first_line, whole=False)
    assert str(info.value) == f"{source}:8: {BAD_TARGET}"


def test_whole_shards_for_requests_and_empty_files(records, tmp_path) -> None:
    request = tmp_path / "r.json"
    request.write_text("\n" + json.dumps({"instances": records[:2]}) + "\n")
    empty = write_lines(tmp_path / "e.json", ["", ""])
    file_jobs = [jobs.FileJob(str(request), "-"), jobs.FileJob(str(empty), "-")]
    shards = list(jobs.read_shards(file_jobs, 1))
    assert [(s.job, s.whole, s.last) for s in shards] == [(0, True, True), (1, True, True)]
    assert shards[0].data == request.read_bytes()


# ------------------------------------------------------------------ without Ray


def test_missing_ray_says_how_to_install_it(tiny_model, records, tmp_path) -> None:
    source = write_lines(tmp_path / "a.jsonl", records[:1])
    block = "import sys; sys.modules['ray'] = None; from deepar_cli.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", block, "predict", "--model-dir", str(tiny_model.dir),
         "--input", str(source), "--output", str(tmp_path / "out"), "--engine", "ray"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 64
    assert result.stderr == ('Error: --engine ray needs Ray, which is not installed: '
                             'pip install "deepar-cli[ray]"\n')
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ Ray


@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    """One local Ray for the module, on loopback, as `predict --engine ray` starts it;
    `predict` uses it as it is."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_USAGE_STATS_ENABLED", "0")
        patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        ray = pytest.importorskip("ray", reason='Ray is optional: pip install "deepar-cli[ray]"')
        import logging

        ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=2,
                 logging_level=logging.ERROR, log_to_driver=False)
        try:
            yield ray
        finally:
            ray.shutdown()


def test_ray_listens_on_loopback_only(ray_local) -> None:
    import psutil

    family = {p.pid for p in psutil.Process().children(recursive=True)}
    listening = [c for c in psutil.net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN and c.pid in family]
    assert listening, "no Ray process found listening"
    addresses = {c.laddr.ip.removeprefix("::ffff:") for c in listening}
    assert addresses == {"127.0.0.1"}, addresses


def test_ray_gives_the_single_process_bytes(runner, tiny_model, records, tmp_path,
                                            ray_local) -> None:
    source = make_folder(records, tmp_path / "in")
    outs = {}
    for engine in ("local", "ray"):
        extra = ("--engine", "ray", "--shard-lines", "3", "--workers", "2") \
            if engine == "ray" else ()
        outs[engine] = tmp_path / engine
        result = predict(runner, tiny_model.dir, source, outs[engine], *extra, env=SAMPLES)
        assert result.exit_code == 0, result.output
        assert result.stdout == f"wrote 15 predictions to 4 files in {outs[engine]}\n"
    assert tree(outs["ray"]) == OUTPUTS
    for name in OUTPUTS:
        assert (outs["ray"] / name).read_bytes() == (outs["local"] / name).read_bytes(), name


def test_ray_error_is_the_single_process_error(runner, tiny_model, records, tmp_path,
                                               ray_local) -> None:
    source = tmp_path / "in"
    write_lines(source / "a.jsonl", records[:2])
    ten_lines(records, source, bad_line=8)
    out = tmp_path / "out"
    result = predict(runner, tiny_model.dir, source, out, "--engine", "ray",
                     "--shard-lines", "2")
    assert result.exit_code == 65, result.stderr
    assert result.stderr == f"Error: {source / 'ten.jsonl'}:8: {BAD_TARGET}\n"
    assert tree(out) == ["a.jsonl.out"]


def _titles() -> Dict[int, str]:
    import psutil

    titles = {}
    for process in psutil.Process().children(recursive=True):
        try:
            titles[process.pid] = " ".join(process.cmdline())
        except psutil.Error:
            pass
    return titles


def test_worker_killed_mid_shard(tiny_model, records, tmp_path, ray_local) -> None:
    from deepar_cli.inference.ray_engine import RayOptions

    source = write_lines(tmp_path / "in.jsonl", records)
    config = InferenceConfig.parse({"output_types": ["mean", "samples"], "num_samples": 50})
    protocol.run_batch_transform(tiny_model.model, source, tmp_path / "local.out", config,
                                  seed=42)
    result: Dict[str, Any] = {}

    def work() -> None:
        try:
            result["count"] = batch.transform(
                tiny_model.model, source, tmp_path / "ray.out", config, seed=42,
                ray=RayOptions(workers=2, shard_lines=2))
        except BaseException as exc:  # reported below
            result["error"] = exc

    thread = threading.Thread(target=work)
    thread.start()
    killed = None
    deadline = time.monotonic() + 60
    while killed is None and thread.is_alive() and time.monotonic() < deadline:
        for pid, title in _titles().items():
            if title.startswith("ray::ShardWorker.transform"):  # Ray's title: mid-shard
                os.kill(pid, signal.SIGKILL)
                killed = pid
                break
        time.sleep(0.005)
    thread.join(timeout=120)
    assert killed is not None, "no worker was caught mid-shard"
    assert "error" not in result, result["error"]
    assert result["count"] == (40, 1)
    assert (tmp_path / "ray.out").read_bytes() == (tmp_path / "local.out").read_bytes()


def test_unreachable_address_is_one_line(runner, tiny_model, records, tmp_path) -> None:
    pytest.importorskip("ray", reason='Ray is optional: pip install "deepar-cli[ray]"')
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once closed
    source = write_lines(tmp_path / "a.jsonl", records[:1])
    tic = time.monotonic()
    result = predict(runner, tiny_model.dir, source, tmp_path / "out", "--engine", "ray",
                     "--address", f"127.0.0.1:{port}")
    assert time.monotonic() - tic < 10
    assert result.exit_code == 64
    assert result.stderr == (f"Error: --address 127.0.0.1:{port}: no Ray cluster answers "
                             "there (Connection refused); start one with `ray start --head`, "
                             "or leave out --address for a local Ray\n")
    result = predict(runner, tiny_model.dir, source, tmp_path / "out", "--engine", "ray",
                     "--address", "nowhere")
    assert result.exit_code == 64
    assert result.stderr == ('Error: --address "nowhere" is not HOST:PORT (e.g. '
                             '127.0.0.1:6379)\n')
