"""`deepar-cli plot`: the notebook's p10/p50/p90 picture, per series and as a grid."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from deepar_cli import modelfolder, plotting
from deepar_cli.cli import main
from deepar_cli.errors import DataError, UsageError
from deepar_cli.records import read_channel

NUM_SERIES, LENGTH, PRED, CONTEXT = 6, 120, 24, 48


def invoke(*args: Any) -> Any:
    return CliRunner().invoke(main, [str(a) for a in args])


def png_size(path: Path) -> Tuple[int, int]:
    """(width, height) from the PNG signature and IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("plot")
    data, model = root / "data", root / "model"
    result = invoke("generate", "--output-dir", data, "--num-series", NUM_SERIES,
                    "--length", LENGTH, "--prediction-length", PRED)
    assert result.exit_code == 0, result.output
    result = invoke("train", "--train", data / "train.json", "--test", data / "test.json",
                    "--time_freq", "H", "--context_length", CONTEXT, "--prediction_length", PRED,
                    "--epochs", 3, "--mini_batch_size", 8, "--num_cells", 10,
                    "--num_layers", 1, "--model-dir", model, "--quiet")
    assert result.exit_code == 0, result.output
    return {"root": root, "train": data / "train.json", "test": data / "test.json",
            "model": model}


@pytest.fixture(scope="module")
def model(workspace: Dict[str, Path]) -> modelfolder.Model:
    return modelfolder.load(workspace["model"])


@pytest.fixture(scope="module")
def test_records(workspace: Dict[str, Path]) -> List[Any]:
    return list(read_channel(workspace["test"]))


@pytest.fixture(scope="module")
def plotted(workspace: Dict[str, Path]) -> Tuple[Any, Path]:
    out = workspace["root"] / "plots"
    result = invoke("plot", "--model-dir", workspace["model"], "--test", workspace["test"],
                    "--series", "0-4", "--output-dir", out)
    return result, out


# --------------------------------------------------------------------------- files


def test_plot_writes_one_png_per_series_a_grid_and_json(plotted: Tuple[Any, Path]) -> None:
    result, out = plotted
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["forecasts.png", "plot.json"] + [f"series-{i}.png" for i in range(5)]
    for i in range(5):
        assert f"wrote {out / f'series-{i}.png'}" in result.output
    assert f"wrote {out / 'forecasts.png'}" in result.output
    assert f"wrote {out / 'plot.json'}" in result.output


def test_pngs_are_valid_and_readable_size(plotted: Tuple[Any, Path]) -> None:
    _, out = plotted
    for i in range(5):
        assert png_size(out / f"series-{i}.png") == (1000, 400)
    width, height = png_size(out / "forecasts.png")
    rows, columns = plotting.grid_shape(5)
    assert (rows, columns) == (5, 1)
    assert width == 1000 and height == round(100 * (0.5 + 3.0 * rows))
    import matplotlib.image

    pixels = matplotlib.image.imread(out / "series-0.png")
    assert pixels.shape[:2] == (400, 1000)
    assert pixels.std() > 0.05  # something was drawn


def test_plot_json_holds_the_chosen_series(plotted: Tuple[Any, Path],
                                           test_records: List[Any]) -> None:
    _, out = plotted
    doc = json.loads((out / "plot.json").read_text())
    assert doc["prediction_length"] == PRED and doc["context_length"] == CONTEXT
    assert doc["grid"] == "forecasts.png"
    assert [s["index"] for s in doc["series"]] == [0, 1, 2, 3, 4]
    for item in doc["series"]:
        record = test_records[item["index"]]
        assert item["start"] == record.start
        assert item["file"] == f"series-{item['index']}.png"
        assert item["source"].endswith(f"test.json:{item['index'] + 1}")
        p10, p50, p90 = (np.array(item[k]) for k in ("p10", "p50", "p90"))
        assert p10.shape == p50.shape == p90.shape == (PRED,)
        assert np.all(p10 <= p50) and np.all(p50 <= p90)
        np.testing.assert_allclose(item["truth"], record.target[-PRED:])
        first = pd.Timestamp(record.start) + pd.Timedelta(hours=LENGTH - PRED)
        assert item["forecast_start"] == first.strftime("%Y-%m-%d %H:%M:%S")
        assert len(item["timestamps"]) == PRED


def test_no_temporary_files_are_left(plotted: Tuple[Any, Path]) -> None:
    _, out = plotted
    assert not [p for p in out.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


# --------------------------------------------------------------------------- data plotted


def test_plotted_arrays_are_the_series_tail(model: modelfolder.Model,
                                            workspace: Dict[str, Path],
                                            test_records: List[Any]) -> None:
    items = plotting.forecast_series(model, workspace["test"], "5,2", seed=7)
    assert [item.index for item in items] == [5, 2]
    for item in items:
        target = test_records[item.index].target
        np.testing.assert_allclose(item.observed, target[-(CONTEXT + PRED):])
        np.testing.assert_allclose(item.truth, target[-PRED:])
        assert len(item.observed_index) == CONTEXT + PRED
        start = pd.Timestamp(test_records[item.index].start)
        assert item.observed_index[0] == start + pd.Timedelta(hours=LENGTH - CONTEXT - PRED)
        assert (item.forecast_index == item.observed_index[-PRED:]).all()


def test_forecast_does_not_depend_on_the_other_series_chosen(
        model: modelfolder.Model, workspace: Dict[str, Path]) -> None:
    alone = plotting.forecast_series(model, workspace["test"], "3", seed=5)[0]
    among = plotting.forecast_series(model, workspace["test"], [0, 1, 2, 3], seed=5)[3]
    np.testing.assert_array_equal(alone.p50, among.p50)
    other = plotting.forecast_series(model, workspace["test"], "3", seed=6)[0]
    assert not np.array_equal(alone.p10, other.p10)


def test_train_channel_is_the_history(model: modelfolder.Model,
                                      workspace: Dict[str, Path]) -> None:
    # generate's train records are the test records minus their last prediction_length
    # points, so forecasting from the train cut is forecasting from the test cut.
    from_test = plotting.forecast_series(model, workspace["test"], "1", seed=3)[0]
    from_train = plotting.forecast_series(model, workspace["test"], "1",
                                          train_channel=workspace["train"], seed=3)[0]
    np.testing.assert_array_equal(from_train.p50, from_test.p50)
    np.testing.assert_array_equal(from_train.truth, from_test.truth)
    np.testing.assert_array_equal(from_train.observed, from_test.observed)


def test_train_channel_that_is_not_shorter_is_refused(model: modelfolder.Model,
                                                      workspace: Dict[str, Path]) -> None:
    with pytest.raises(DataError, match="must be longer"):
        plotting.forecast_series(model, workspace["test"], "0",
                                 train_channel=workspace["test"])


def test_zero_samples_is_a_usage_error(model: modelfolder.Model,
                                       workspace: Dict[str, Path]) -> None:
    with pytest.raises(UsageError, match="num-samples"):
        plotting.forecast_series(model, workspace["test"], "0", num_samples=0)


def test_default_series_are_the_first_five(model: modelfolder.Model,
                                           workspace: Dict[str, Path]) -> None:
    items = plotting.forecast_series(model, workspace["test"], None, num_samples=10)
    assert [item.index for item in items] == [0, 1, 2, 3, 4]


# --------------------------------------------------------------------------- --series


@pytest.mark.parametrize("spec, indices", [
    ("0-4", [0, 1, 2, 3, 4]), ("0,3,7", [0, 3, 7]), ("5", [5]),
    (" 0-2, 7 ", [0, 1, 2, 7]), ("2,2,1-3", [2, 1, 3]), ("3-3", [3]),
])
def test_parse_series(spec: str, indices: List[int]) -> None:
    assert plotting.parse_series(spec) == indices


@pytest.mark.parametrize("spec", ["", "a", "4-2", "-1", "1.5", "0,,2", "1-", "0-4x",
                                  "0-99999999999"])
def test_parse_series_refuses_malformed(spec: str) -> None:
    with pytest.raises(UsageError):
        plotting.parse_series(spec)


def test_malformed_series_is_a_one_line_usage_error(workspace: Dict[str, Path]) -> None:
    result = invoke("plot", "--model-dir", workspace["model"], "--test", workspace["test"],
                    "--series", "0-x", "--output-dir", workspace["root"] / "bad")
    assert result.exit_code == UsageError.exit_code
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "0-x" in lines[0]
    assert not (workspace["root"] / "bad").exists()


def test_unknown_series_names_the_index_and_the_count(workspace: Dict[str, Path]) -> None:
    result = invoke("plot", "--model-dir", workspace["model"], "--test", workspace["test"],
                    "--series", "9", "--output-dir", workspace["root"] / "bad", "--quiet")
    assert result.exit_code == DataError.exit_code
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert "series 9" in lines[0] and f"{NUM_SERIES} series" in lines[0]
    assert not (workspace["root"] / "bad").exists()


def test_missing_model_folder_is_a_one_line_error(workspace: Dict[str, Path]) -> None:
    missing = workspace["root"] / "no-model"
    result = invoke("plot", "--model-dir", missing, "--test", workspace["test"],
                    "--output-dir", workspace["root"] / "bad")
    assert result.exit_code == 66
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and str(missing) in lines[0]


def test_quiet_prints_nothing_and_seed_repeats(workspace: Dict[str, Path],
                                               plotted: Tuple[Any, Path]) -> None:
    out = workspace["root"] / "again"
    result = invoke("plot", "--model-dir", workspace["model"], "--test", workspace["test"],
                    "--series", "0-4", "--output-dir", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert result.output == ""
    first = json.loads((plotted[1] / "plot.json").read_text())["series"]
    again = json.loads((out / "plot.json").read_text())["series"]
    assert [s["p50"] for s in first] == [s["p50"] for s in again]


def test_plot_has_help() -> None:
    result = invoke("plot", "--help")
    assert result.exit_code == 0
    for option in ("--model-dir", "--test", "--series", "--output-dir", "--train", "--seed",
                   "--quiet"):
        assert option in result.output
