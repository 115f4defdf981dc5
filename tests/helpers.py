"""What tests import: the tiny data set's sizes and hyperparameters, and small helpers.

Fixtures live in conftest.py; everything a test module imports by name lives here.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np
import requests
from click.testing import CliRunner

from deepar_cli.cli import main
from deepar_cli.model.forecasting import sample_paths

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_HYPERPARAMETERS = REPO / "data" / "hyperparameters.json"
START = "2016-01-01 00:00:00"

# The tiny synthetic data set every training test uses.
TINY_SERIES = 8
TINY_LENGTH = 60
TINY_PREDICTION_LENGTH = 12
# The seed of the shared tiny model, and the CLI's default seed.
SEED = 42
# Raw hyperparameters (as a hyperparameters.json would hold them) for a run of a second.
TINY_HP: Dict[str, Any] = {
    "time_freq": "H",
    "context_length": 12,
    "prediction_length": TINY_PREDICTION_LENGTH,
    "epochs": 1,
    "mini_batch_size": 8,
    "num_cells": 8,
    "num_layers": 1,
    "num_eval_samples": 10,
}
# The tiny data read as one pass: 8 series x (48-12+1)/12 = 24.7 windows, read 7 times to
# make 20+ batches of 8.
TINY_PLAN = {"batches_per_epoch": 22, "training_windows": 25, "passes": 7}


def hp_args(values: Dict[str, Any]) -> List[str]:
    """Hyperparameters as `deepar-cli train` options (`--name value`)."""
    args: List[str] = []
    for name, value in values.items():
        args += [f"--{name}", value if isinstance(value, str) else json.dumps(value)]
    return args


def write_lines(path: Path, lines: Iterable[Any]) -> Path:
    """Write a JSON Lines file: strings as they are, anything else through json.dumps."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        for line in lines:
            handle.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    return path


def tiny_channels(folder: Path, make_target: Callable[[int, np.ndarray], Any]
                  ) -> Tuple[Path, Path]:
    """8 series of 60 points from `make_target(k, t)`; train drops the last 12."""
    from deepar_cli.data.channels import write_records
    from deepar_cli.data.records import Record

    t = np.arange(TINY_LENGTH)
    cut = TINY_LENGTH - TINY_PREDICTION_LENGTH
    test = [Record(START, np.asarray(make_target(k, t), dtype=float))
            for k in range(TINY_SERIES)]
    train = [Record(START, r.target[:cut]) for r in test]
    write_records(folder / "train.json", train)
    write_records(folder / "test.json", test)
    return folder / "train.json", folder / "test.json"


class Events:
    """A `log` callback that keeps every (event, figures) pair."""

    def __init__(self) -> None:
        self.items: List[Tuple[str, Dict[str, Any]]] = []

    def __call__(self, event: str, figures: Dict[str, Any]) -> None:
        self.items.append((event, dict(figures)))

    def names(self) -> List[str]:
        return [name for name, _ in self.items]

    def of(self, name: str) -> List[Dict[str, Any]]:
        return [figures for event, figures in self.items if event == name]


def usage_error(command: str, message: str) -> str:
    """What click prints (to stderr) for a usage error of `deepar-cli COMMAND`."""
    head = f"Usage: deepar-cli {command} [OPTIONS]" if command else \
        "Usage: deepar-cli [OPTIONS] COMMAND [ARGS]..."
    try_line = f"Try 'deepar-cli {command} --help' for help." if command else \
        "Try 'deepar-cli --help' for help."
    return f"{head}\n{try_line}\n\nError: {message}\n"


# test_serve's helpers, shared with other test modules


JSON_TYPE = "application/json"


START_TIMEOUT_S = 60


HTTP_TIMEOUT_S = 30


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def session() -> requests.Session:
    client = requests.Session()
    client.trust_env = False  # loopback only: never through a proxy from the environment
    return client


class Server:
    """`python -m deepar_cli serve` in its own process; output goes to a log file."""

    def __init__(self, model_dir: Path, log: Path, workers: int = 2,
                 env: Optional[Dict[str, str]] = None, new_session: bool = False,
                 options: Iterable[str] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.http = session()
        with open(log, "wb") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "deepar_cli", "serve", "--model-dir", str(model_dir),
                 "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers),
                 "--seed", "42", *options],
                stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                start_new_session=new_session)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}:\n{self.text()}")
            try:
                if self.http.get(self.url + "/ping", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise AssertionError(f"no /ping within {START_TIMEOUT_S} s:\n{self.text()}")

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def post(self, body: Any, content_type: str = JSON_TYPE, **kwargs: Any
             ) -> requests.Response:
        data = json.dumps(body) if isinstance(body, (dict, list)) else body
        headers = {"Content-Type": content_type, **kwargs.pop("headers", {})}
        return self.http.post(self.url + "/invocations", data=data, headers=headers,
                              timeout=HTTP_TIMEOUT_S, **kwargs)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.http.close()


# test_tune's helpers, shared with other test modules


STATIC = {k: v for k, v in TINY_HP.items() if k != "num_cells"}


NUM_CELLS = {"Name": "num_cells", "MinValue": "4", "MaxValue": "16"}


LEARNING_RATE = {"Name": "learning_rate", "MinValue": "1e-3", "MaxValue": "1e-1",
                 "ScalingType": "Logarithmic"}


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def config(**fields: Any) -> Dict[str, Any]:
    """A small Random search over num_cells and learning_rate, with fields replaced."""
    return {"Strategy": "Random", "RandomSeed": 7,
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 3},
            "ParameterRanges": {"IntegerParameterRanges": [NUM_CELLS],
                                "ContinuousParameterRanges": [LEARNING_RATE]},
            **fields}


def tune_args(data: Any, folder: Path, tuning: Optional[Dict[str, Any]] = None,
              static: Optional[Dict[str, Any]] = None, test: bool = False) -> List[str]:
    """`tune` options for the tiny data, writing the static and tuning files into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    args = ["tune", "--train", str(data.train), "--output-dir", str(folder / "out"),
            "--hyperparameters", str(write_json(folder / "static.json", static or STATIC)),
            "--tuning-config", str(write_json(folder / "tuning.json", tuning or config())),
            "--quiet", "--final-model", "refit"]
    return args + (["--test", str(data.test)] if test else [])


def csv_rows(path: Path) -> List[Dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# test_ensemble's helpers, shared with other test modules


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), prog_name="deepar-cli")


def paths(model: Any, entries: List[Dict[str, Any]], num_samples: int) -> np.ndarray:
    return np.array([fc.samples for fc in sample_paths(model, entries, num_samples=num_samples,
                                                       seed=3)])


def assert_predict_refused(folder: Path, records: Path, tmp_path: Path, message: str) -> None:
    """predict with the model folder exits 66 with `message` and writes nothing."""
    result = run("predict", "--model-dir", str(folder), "--input", str(records),
                 "--output", str(tmp_path / "out.jsonl"))
    assert result.exit_code == 66
    assert result.stderr == f"Error: {message}\n"
    assert not (tmp_path / "out.jsonl").exists()
