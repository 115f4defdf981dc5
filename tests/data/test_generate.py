"""`deepar-cli generate`: the SageMaker notebook's synthetic data, value for value."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import List

import numpy as np
import pytest

from deepar_cli.cli import main
from deepar_cli.data.channels import read_channel
from helpers import usage_error


def notebook_data(num_series: int = 200, length: int = 400, period: int = 24,
                  seed: int = 1) -> List[List[float]]:
    """The notebook's cells, re-typed independently of deepar_cli.data.synthetic."""
    np.random.seed(seed)
    out = []
    for _ in range(num_series):
        level = 10 * np.random.rand()
        amp = (0.1 + 0.3 * np.random.rand()) * level
        sig = 0.05 * level
        t = np.arange(length)
        source = level + amp * np.sin(2 * np.pi * t / period)
        data = source + sig * np.random.randn(length)
        out.append(data.tolist())
    return out


def read_json_lines(path: Path) -> List[dict]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def test_defaults_reproduce_the_notebook_exactly(runner, tmp_path):
    expected = notebook_data()
    with runner.isolated_filesystem(temp_dir=tmp_path):
        result = runner.invoke(main, ["generate"])  # every option at its default
        assert result.exit_code == 0, result.output
        assert result.output.splitlines() == [
            "wrote data/train.json (200 series, 352 points each)",
            "wrote data/test.json (200 series, 400 points each)",
        ]
        train = read_json_lines(Path("data/train.json"))
        test = read_json_lines(Path("data/test.json"))
    assert len(train) == len(test) == 200
    for k in range(200):
        assert set(train[k]) == {"start", "target"}
        assert set(test[k]) == {"start", "target"}
        assert train[k]["start"] == test[k]["start"] == "2016-01-01 00:00:00"
        # float64 survives the JSON round trip bit for bit
        assert test[k]["target"] == expected[k]
        assert train[k]["target"] == expected[k][:352]


def test_defaults_are_the_notebooks_first_values(runner, tmp_path):
    """A spot check against the notebook's printed output (its first series)."""
    result = runner.invoke(main, ["generate", "--output-dir", str(tmp_path), "--num-series", "1"])
    assert result.exit_code == 0, result.output
    first = read_json_lines(tmp_path / "train.json")[0]["target"]
    assert [round(v, 2) for v in first[:3]] == [4.06, 4.29, 5.01]


def test_printed_lines_name_files_counts_and_lengths(runner, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(main, ["generate", "--output-dir", str(out), "--num-series", "3",
                                  "--length", "30", "--prediction-length", "5"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"wrote {out / 'train.json'} (3 series, 25 points each)",
        f"wrote {out / 'test.json'} (3 series, 30 points each)",
    ]


def test_options_change_every_constant(runner, tmp_path):
    result = runner.invoke(main, [
        "generate", "--output-dir", str(tmp_path), "--num-series", "4", "--length", "50",
        "--period", "7", "--seed", "3", "--prediction-length", "10",
        "--start", "2020-03-01", "--freq", "D",
    ])
    assert result.exit_code == 0, result.output
    expected = notebook_data(num_series=4, length=50, period=7, seed=3)
    test = read_json_lines(tmp_path / "test.json")
    train = read_json_lines(tmp_path / "train.json")
    assert [r["target"] for r in test] == expected
    assert [r["target"] for r in train] == [e[:40] for e in expected]
    assert {r["start"] for r in test + train} == {"2020-03-01 00:00:00"}


@pytest.mark.parametrize("fmt, suffix", [("jsonl", ".jsonl"), ("json.gz", ".json.gz"),
                                         pytest.param("parquet", ".parquet",
                                                      marks=pytest.mark.parquet)])
def test_other_formats_read_back_the_same(runner, tmp_path, fmt, suffix):
    expected = notebook_data(num_series=5, length=40)
    result = runner.invoke(main, ["generate", "--output-dir", str(tmp_path), "--format", fmt,
                                  "--num-series", "5", "--length", "40",
                                  "--prediction-length", "8"])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    assert (tmp_path / f"train{suffix}").is_file()
    assert (tmp_path / f"test{suffix}").is_file()
    test = list(read_channel(tmp_path / f"test{suffix}"))
    train = list(read_channel(tmp_path / f"train{suffix}"))
    assert [r.target.tolist() for r in test] == expected
    assert [r.target.tolist() for r in train] == [e[:32] for e in expected]
    assert {r.start for r in test + train} == {"2016-01-01 00:00:00"}
    assert all(r.cat is None and r.dynamic_feat is None for r in test + train)


def test_json_gz_is_gzip_json_lines(runner, tmp_path):
    result = runner.invoke(main, ["generate", "--output-dir", str(tmp_path), "--format",
                                  "json.gz", "--num-series", "2", "--length", "20",
                                  "--prediction-length", "4"])
    assert result.exit_code == 0, result.output
    with gzip.open(tmp_path / "train.json.gz", "rt") as handle:
        rows = [json.loads(line) for line in handle]
    assert [len(r["target"]) for r in rows] == [16, 16]


@pytest.mark.parquet
def test_parquet_has_sagemaker_columns(runner, tmp_path):
    result = runner.invoke(main, ["generate", "--output-dir", str(tmp_path), "--format",
                                  "parquet", "--num-series", "2", "--length", "20",
                                  "--prediction-length", "4", "--num-categories", "2"])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "test.parquet")
    assert table.column_names == ["start", "target", "cat"]
    assert table.num_rows == 2
    assert table.column("cat").to_pylist() == [[0], [1]]


def test_cat_and_dynamic_feat_fields(runner, tmp_path):
    result = runner.invoke(main, ["generate", "--output-dir", str(tmp_path), "--num-series", "5",
                                  "--length", "40", "--prediction-length", "8",
                                  "--num-categories", "3", "--num-dynamic-feat", "2"])
    assert result.exit_code == 0, result.output
    train = read_json_lines(tmp_path / "train.json")
    test = read_json_lines(tmp_path / "test.json")
    for k, (tr, te) in enumerate(zip(train, test)):
        assert set(tr) == set(te) == {"start", "target", "cat", "dynamic_feat"}
        assert tr["cat"] == te["cat"] == [k % 3]
        assert len(tr["dynamic_feat"]) == len(te["dynamic_feat"]) == 2
        assert [len(f) for f in tr["dynamic_feat"]] == [len(tr["target"])] * 2 == [32, 32]
        assert [len(f) for f in te["dynamic_feat"]] == [len(te["target"])] * 2 == [40, 40]
        # train's features are the first 32 points of test's
        assert [f[:32] for f in te["dynamic_feat"]] == tr["dynamic_feat"]
        assert all(-1.0 <= v <= 1.0 for f in te["dynamic_feat"] for v in f)
    # the extra fields do not change the targets: still the notebook's numbers
    assert [r["target"] for r in test] == notebook_data(num_series=5, length=40)
    # and they validate as a channel
    assert len(list(read_channel(tmp_path / "train.json"))) == 5


@pytest.mark.parametrize("args, message", [
    (["--num-series", "0"], "Invalid value for '--num-series': 0 is not in the range x>=1."),
    (["--length", "1"], "Invalid value for '--length': 1 is not in the range x>=2."),
    (["--prediction-length", "0"],
     "Invalid value for '--prediction-length': 0 is not in the range x>=1."),
    (["--period", "0"], "Invalid value for '--period': 0 is not in the range x>=1."),
    (["--seed", "-1"], "Invalid value for '--seed': -1 is not in the range 0<=x<=4294967295."),
    (["--num-categories", "-1"],
     "Invalid value for '--num-categories': -1 is not in the range x>=0."),
    (["--num-dynamic-feat", "-2"],
     "Invalid value for '--num-dynamic-feat': -2 is not in the range x>=0."),
    (["--num-series", "many"],
     "Invalid value for '--num-series': 'many' is not a valid integer range."),
    (["--format", "xml"],
     "Invalid value for '--format': 'xml' is not one of 'json', 'jsonl', 'json.gz', 'parquet'."),
])
def test_bad_options_are_clicks_usage_errors_with_exit_code_64(runner, tmp_path, args, message):
    out = tmp_path / "out"
    result = runner.invoke(main, ["generate", "--output-dir", str(out), *args],
                           prog_name="deepar-cli")
    assert result.exit_code == 64
    assert result.stdout == ""
    assert result.stderr == usage_error("generate", message)
    assert not out.exists()  # nothing written


@pytest.mark.parametrize("args, message", [
    (["--length", "48"], "length (48) must be greater than prediction_length (48)"),
    (["--length", "10", "--prediction-length", "20"],
     "length (10) must be greater than prediction_length (20)"),
    (["--freq", "fortnightly"], 'unknown frequency "fortnightly"; valid: min, 5min, 30min, '
                                "H (or h), D, W, M, with an optional multiple such as 2H"),
    (["--freq", "Q"], 'unknown frequency "Q"; valid: min, 5min, 30min, '
                      "H (or h), D, W, M, with an optional multiple such as 2H"),
    (["--start", "yesterday-ish"],
     'start must be a timestamp like "2016-01-01 00:00:00", got "yesterday-ish"'),
])
def test_settings_that_cannot_make_data_are_one_line_with_exit_code_64(runner, tmp_path, args,
                                                                       message):
    out = tmp_path / "out"
    result = runner.invoke(main, ["generate", "--output-dir", str(out), *args],
                           prog_name="deepar-cli")
    assert result.exit_code == 64
    assert result.stdout == ""
    assert result.stderr == f"Error: {message}\n"
    assert not out.exists()  # nothing written


@pytest.mark.parametrize("freq", ["H", "h", "5min", "D", "2H"])
def test_known_frequencies_are_accepted(runner, tmp_path, freq):
    result = runner.invoke(main, ["generate", "--output-dir", str(tmp_path), "--freq", freq,
                                  "--num-series", "1", "--length", "10",
                                  "--prediction-length", "2"])
    assert result.exit_code == 0, result.output
