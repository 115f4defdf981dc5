"""Memory: the estimates grow with what sizes the tensors, the machine's memory is read from
cgroup and meminfo files, and a training or forecast that cannot fit is refused before it
starts (train 78, tune 78 or a failed trial, predict 64, serve 400), with both figures."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict

import pytest

from deepar_cli.cli import main
from deepar_cli.config import memory
from deepar_cli.config.hyperparameters import resolve
from deepar_cli.config.memory import Available, Shape
from deepar_cli.data.channels import read_channel
from deepar_cli.errors import HyperparameterError, UsageError
from helpers import NOTEBOOK_HYPERPARAMETERS, STATIC, TINY_HP, Server, csv_rows, hp_args, tune_args

GiB = 2**30
BIG = {"context_length": 10000, "mini_batch_size": 100000}
BIG_MESSAGE = (
    "training needs about 1.66 TiB of memory, driven by the LSTM's inputs (mini_batch_size "
    "100000 x (context_length 10000 + prediction_length 12) x 57 inputs a step); 600 MiB is "
    "available (--max-memory); set --max-memory to override")


@pytest.fixture
def max_memory(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Sets $DEEPAR_MAX_MEMORY for the test (what --max-memory sets), undone after it."""
    return lambda size: monkeypatch.setenv(memory.MAX_MEMORY_ENV, size)


# --------------------------------------------------------------------------- estimates


def training(**values: Any) -> int:
    hp = resolve({**TINY_HP, **values})
    return memory.training_bytes(hp, Shape.of(hp, None, 0), num_observations=400).bytes


@pytest.mark.parametrize("name, low, high", [
    ("context_length", 12, 500), ("mini_batch_size", 8, 4096), ("num_cells", 8, 200),
    ("num_layers", 1, 4), ("prediction_length", 12, 400), ("num_eval_samples", 10, 10000)])
def test_the_training_estimate_grows_with_each_size(name, low, high):
    assert training(**{name: low}) < training(**{name: (low + high) // 2}) < training(
        **{name: high})


def test_the_training_estimate_grows_with_the_embedding_and_the_data():
    hp = resolve(dict(TINY_HP))

    def estimate(cardinality: int, dimension: int, observations: int) -> int:
        shape = replace(Shape.of(hp, [cardinality], 0), embedding_dimension=dimension)
        return memory.training_bytes(hp, shape, num_observations=observations).bytes

    assert estimate(10, 10, 400) < estimate(10**6, 10, 400) < estimate(10**6, 100, 400)
    assert estimate(10, 10, 400) < estimate(10, 10, 10**8)


def test_the_forecast_estimate_grows_with_samples_series_and_kept_samples():
    hp = resolve(dict(TINY_HP))
    shape = Shape.of(hp, None, 0)

    def estimate(samples: int, series: int, kept: bool, quantiles: int = 9) -> int:
        return memory.forecast_bytes(shape, num_samples=samples, series=series,
                                     samples_kept=kept, num_quantiles=quantiles).bytes

    assert estimate(100, 8, False) < estimate(5000, 8, False) < estimate(10000, 8, False)
    assert estimate(100, 8, False) < estimate(100, 8000, False) < estimate(100, 8000, True)
    assert estimate(100, 8, False, 1) < estimate(100, 8, False, 9)
    longer = Shape.of(resolve({**TINY_HP, "prediction_length": 400}), None, 0)
    assert estimate(100, 8, False) < memory.forecast_bytes(
        longer, num_samples=100, series=8, samples_kept=False, num_quantiles=9).bytes


def test_the_notebook_settings_fit_in_one_gib():
    """The notebook's hyperparameters on its data (200 series of 400 points, 48 held out),
    and forecasts of its 200 series with SageMaker's default configuration."""
    hp = resolve(json.loads(NOTEBOOK_HYPERPARAMETERS.read_text()))
    one_gib = Available(GiB, "test")
    memory.check_training(hp, None, 0, num_observations=200 * 352, training_windows=1400,
                          free=one_gib)
    memory.check_forecast(hp, None, 0, num_samples=100, series=200, samples_kept=False,
                          num_quantiles=9, free=one_gib)


def test_check_messages_name_the_drivers_and_both_figures():
    hp = resolve({**TINY_HP, **BIG})
    with pytest.raises(HyperparameterError) as raised:
        memory.check_training(hp, None, 0, num_observations=384,
                              free=Available(600 * 2**20, "--max-memory"))
    assert str(raised.value) == BIG_MESSAGE
    with pytest.raises(UsageError) as refused:
        memory.check_forecast(resolve(dict(TINY_HP)), None, 0, num_samples=1000,
                              series=200_000, samples_kept=True, num_quantiles=0,
                              free=Available(22 * GiB, "MemAvailable"))
    assert str(refused.value) == (
        "forecasting 200000 series needs about 36.2 GiB of memory, driven by the response "
        "(200000 series x num_samples 1000 x prediction_length 12); 22 GiB is available "
        "(MemAvailable); ask for fewer samples or fewer series at once")


# --------------------------------------------------------------------------- the machine


@pytest.mark.parametrize("text, size", [
    ("8G", 8 * GiB), ("500M", 500 * 2**20), ("1.5g", int(1.5 * GiB)), ("2GiB", 2 * GiB),
    ("64kB", 64 * 1024), ("123456", 123456), (" 1T ", 2**40)])
def test_sizes_parse_in_binary_units(text, size):
    assert memory.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "8X", "-1G", "0", "G", "8 G B"])
def test_a_size_that_is_not_one_is_refused(text):
    with pytest.raises(UsageError) as raised:
        memory.parse_size(text)
    assert str(raised.value) == (f'cannot read memory size "{text}"; give a size like "8G" '
                                 'or "500M"')


def fake_machine(tmp_path: Path, cgroup: str, files: Dict[str, str],
                 mem_available_kb: int = 4 * 2**20) -> Dict[str, Path]:
    """/proc/self/cgroup, /proc/meminfo and a /sys/fs/cgroup tree under tmp_path."""
    root = tmp_path / "sys"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (tmp_path / "cgroup").write_text(cgroup)
    (tmp_path / "meminfo").write_text(f"MemTotal:       32000000 kB\nMemFree:  1000 kB\n"
                                      f"MemAvailable:   {mem_available_kb} kB\n")
    return {"proc_cgroup": tmp_path / "cgroup", "root": root, "meminfo": tmp_path / "meminfo"}


def test_cgroup_v2_takes_the_smallest_limit_up_the_tree(tmp_path):
    paths = fake_machine(tmp_path, "0::/user.slice/job\n", {
        "user.slice/job/memory.max": "max\n", "user.slice/memory.max": "1073741824\n",
        "memory.max": "2147483648\n"})
    assert memory.cgroup_limit(paths["proc_cgroup"], paths["root"]) == GiB
    found = memory.available({}, **paths)
    assert found == Available(GiB, "the cgroup's memory limit")


def test_cgroup_v1_reads_memory_limit_in_bytes_and_ignores_no_limit(tmp_path):
    paths = fake_machine(tmp_path, "5:cpu,cpuacct:/x\n4:memory:/docker/abc\n", {
        "memory/docker/abc/memory.limit_in_bytes": "9223372036854771712\n",
        "memory/docker/memory.limit_in_bytes": "3221225472\n",
        "cpu,cpuacct/x/memory.limit_in_bytes": "1024\n"},  # not the memory controller's
        mem_available_kb=2 * 2**20)
    assert memory.cgroup_limit(paths["proc_cgroup"], paths["root"]) == 3 * GiB
    # MemAvailable (2 GiB) is below the limit: the smaller one counts.
    assert memory.available({}, **paths) == Available(2 * GiB, "MemAvailable")


def test_no_cgroup_limit_leaves_memavailable(tmp_path):
    paths = fake_machine(tmp_path, "0::/\n", {"memory.max": "max\n"})
    assert memory.cgroup_limit(paths["proc_cgroup"], paths["root"]) is None
    assert memory.available({}, **paths) == Available(4 * GiB, "MemAvailable")


def test_the_override_wins_and_nothing_readable_is_no_figure(tmp_path):
    paths = fake_machine(tmp_path, "0::/\n", {"memory.max": "1073741824\n"})
    assert memory.available({memory.MAX_MEMORY_ENV: "64G"}, **paths) == Available(
        64 * GiB, "--max-memory")
    missing = {"proc_cgroup": tmp_path / "none", "root": tmp_path / "none",
               "meminfo": tmp_path / "none"}
    assert memory.available({}, **missing) is None


# --------------------------------------------------------------------------- the commands


def test_train_refuses_what_cannot_fit_before_training(runner, tiny_data, tmp_path,
                                                       max_memory):
    max_memory("1T")  # restored after the test; --max-memory replaces it in this process
    result = runner.invoke(main, ["train", "--train", str(tiny_data.train), "--model-dir",
                                  str(tmp_path / "model"), "--quiet", "--max-memory", "600M",
                                  *hp_args({**TINY_HP, **BIG})])
    assert result.exit_code == 78
    assert result.stderr == f"Error: {BIG_MESSAGE}\n"
    assert "#epoch" not in result.stdout
    assert not (tmp_path / "model").exists()


def test_a_bad_max_memory_is_a_usage_error(runner, tiny_data, tmp_path):
    result = runner.invoke(main, ["train", "--train", str(tiny_data.train), "--model-dir",
                                  str(tmp_path / "model"), "--max-memory", "lots",
                                  *hp_args(TINY_HP)])
    assert result.exit_code == 64
    assert result.stderr.endswith("Error: Invalid value for '--max-memory': cannot read "
                                  'memory size "lots"; give a size like "8G" or "500M"\n')


PREDICT_MESSAGE = (
    "forecasting 8 series needs about 554 MiB of memory, driven by the sampling decoder "
    "(num_samples 10000 x (context_length 12 + prediction_length 12)); 500 MiB is "
    "available (--max-memory); ask for fewer samples or fewer series at once")


def test_predict_refuses_a_configuration_that_cannot_fit(runner, tiny_model, tmp_path,
                                                         max_memory):
    max_memory("500M")
    args = ["predict", "--model-dir", str(tiny_model.dir), "--input", str(tiny_model.test),
            "--output", str(tmp_path / "out.jsonl"), "--quiet"]
    result = runner.invoke(main, [*args, "--num-samples", "10000", "--output-types",
                                  "samples"])
    assert result.exit_code == 64
    assert result.stderr == f"Error: {PREDICT_MESSAGE}\n"
    assert not (tmp_path / "out.jsonl").exists()
    # SageMaker's default configuration fits in as much.
    fits = runner.invoke(main, args)
    assert fits.exit_code == 0, fits.output
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 8


def test_serve_answers_400_to_a_request_that_cannot_fit(tiny_model, tmp_path):
    instances = [{"start": str(r.start), "target": r.target.tolist()}
                 for r in read_channel(tiny_model.test)]
    lines_config = {"num_samples": 1000, "output_types": ["samples"]}
    endpoint = Server(tiny_model.dir, tmp_path / "serve.log", workers=1,
                      env={"DEEPAR_INFERENCE_CONFIG": json.dumps(lines_config)},
                      options=["--max-memory", "500M"])
    try:
        endpoint.wait_ready()
        # JSON Lines: 400 records fit 256 at a time (489 MiB), but the endpoint holds all.
        body = b"".join(json.dumps(instances[k % 8]).encode() + b"\n" for k in range(400))
        lines = endpoint.post(body, "application/jsonlines")
        assert lines.status_code == 400
        assert lines.json() == {"error": (
            "forecasting 400 series needs about 515 MiB of memory, driven by the response "
            "(400 series x num_samples 1000 x prediction_length 12); 500 MiB is available "
            "(--max-memory); ask for fewer samples or fewer series at once")}
        refused = endpoint.post({"instances": instances, "configuration": {
            "num_samples": 10000, "output_types": ["samples"]}})
        assert refused.status_code == 400
        assert refused.json() == {"error": PREDICT_MESSAGE}
        answered = endpoint.post({"instances": instances})  # the same worker, still up
        assert answered.status_code == 200, answered.text
        assert len(answered.json()["predictions"]) == 8
    finally:
        endpoint.stop()
    assert "Traceback" not in endpoint.text()


def test_tune_refuses_static_hyperparameters_that_cannot_fit(runner, tiny_data, tmp_path,
                                                             max_memory):
    max_memory("600M")
    result = runner.invoke(main, tune_args(tiny_data, tmp_path, static={**STATIC, **BIG}))
    assert result.exit_code == 78
    assert result.stderr == (
        "Error: the smallest trial (each range at its low end) needs about 1.31 TiB of "
        "memory, driven by the LSTM's inputs (mini_batch_size 100000 x (context_length 10000 "
        "+ prediction_length 12) x 57 inputs a step); 600 MiB is available (--max-memory); "
        "set --max-memory to override\n")
    assert not (tmp_path / "out").exists()


def test_a_trial_that_cannot_fit_fails_with_its_reason(runner, tiny_data, tmp_path,
                                                       max_memory):
    max_memory("600M")
    grid = {"Strategy": "Grid", "RandomSeed": 1, "ParameterRanges": {
        "CategoricalParameterRanges": [{"Name": "mini_batch_size",
                                        "Values": ["100000", "8"]}]}}
    static = {k: v for k, v in TINY_HP.items() if k != "mini_batch_size"}
    result = runner.invoke(main, tune_args(tiny_data, tmp_path, grid, static, test=True))
    assert result.exit_code == 0, result.output
    rows = {r["state"]: r for r in csv_rows(tmp_path / "out" / "trials.csv")}
    assert (rows["FAILED"]["mini_batch_size"], rows["COMPLETE"]["mini_batch_size"]) == (
        "100000", "8")
    assert rows["FAILED"]["reason"].startswith(
        "training needs about 13.2 GiB of memory, driven by the mini-batches' windows "
        "(mini_batch_size 100000 x (context_length 12 + the largest lag 721 + "
        "prediction_length 12)); 600 MiB is available (--max-memory)")
