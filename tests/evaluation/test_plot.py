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

from deepar_cli.cli import evaluate as evaluate_command
from deepar_cli.cli import main
from deepar_cli.data.channels import read_channel
from deepar_cli.errors import DataError, UsageError
from deepar_cli.evaluation import plotting
from deepar_cli.model import modelfolder
from helpers import TINY_HP, TINY_LENGTH, TINY_SERIES, usage_error

# The shared tiny model's data and shape.
NUM_SERIES, LENGTH = TINY_SERIES, TINY_LENGTH
PRED, CONTEXT = TINY_HP["prediction_length"], TINY_HP["context_length"]


def invoke(*args: Any) -> Any:
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="deepar-cli")


def png_size(path: Path) -> Tuple[int, int]:
    """(width, height) from the PNG signature and IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, tiny_model: Any) -> Dict[str, Path]:
    """The shared tiny model (read only) and its channels; outputs go under root."""
    return {"root": tmp_path_factory.mktemp("plot"), "train": tiny_model.train,
            "test": tiny_model.test, "model": tiny_model.dir}


@pytest.fixture(scope="module")
def model(tiny_model: Any) -> modelfolder.Model:
    return tiny_model.model


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
    items = plotting.forecast_series(model, workspace["test"], [5, 2], seed=7)
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
    alone = plotting.forecast_series(model, workspace["test"], [3], seed=5)[0]
    among = plotting.forecast_series(model, workspace["test"], [0, 1, 2, 3], seed=5)[3]
    np.testing.assert_array_equal(alone.p50, among.p50)
    other = plotting.forecast_series(model, workspace["test"], [3], seed=6)[0]
    assert not np.array_equal(alone.p10, other.p10)


def test_train_channel_is_the_history(model: modelfolder.Model,
                                      workspace: Dict[str, Path]) -> None:
    # generate's train records are the test records minus their last prediction_length
    # points, so forecasting from the train cut is forecasting from the test cut.
    from_test = plotting.forecast_series(model, workspace["test"], [1], seed=3)[0]
    from_train = plotting.forecast_series(model, workspace["test"], [1],
                                          train_channel=workspace["train"], seed=3)[0]
    np.testing.assert_array_equal(from_train.p50, from_test.p50)
    np.testing.assert_array_equal(from_train.truth, from_test.truth)
    np.testing.assert_array_equal(from_train.observed, from_test.observed)


def test_train_channel_that_is_not_shorter_is_refused(model: modelfolder.Model,
                                                      workspace: Dict[str, Path]) -> None:
    with pytest.raises(DataError) as info:
        plotting.forecast_series(model, workspace["test"], [0],
                                 train_channel=workspace["test"])
    assert str(info.value) == (
        f"{workspace['test']}:1: series 0 has {LENGTH} points in the test channel and "
        f"{LENGTH} in the train channel; the test record must be longer to show the truth")


def test_zero_samples_is_refused(model: modelfolder.Model, workspace: Dict[str, Path]) -> None:
    with pytest.raises(UsageError) as info:
        plotting.forecast_series(model, workspace["test"], [0], num_samples=0)
    assert str(info.value) == "the number of samples must be in [1, 10000], got 0"
    out = workspace["root"] / "zero"
    result = invoke("plot", "--model-dir", workspace["model"], "--test", workspace["test"],
                    "--num-samples", "0", "--output-dir", out)
    assert result.exit_code == 64
    assert result.stderr == usage_error(
        "plot", "Invalid value for '--num-samples': 0 is not in the range 1<=x<=10000.")
    assert not out.exists()


def test_default_series_are_the_first_five(model: modelfolder.Model,
                                           workspace: Dict[str, Path]) -> None:
    items = plotting.forecast_series(model, workspace["test"], None, num_samples=10)
    assert [item.index for item in items] == [0, 1, 2, 3, 4]


# --------------------------------------------------------------------------- --series


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> List[Any]:
    """Stand-ins for the model and the drawing: what `plot --series` hands the library."""
    calls: List[Any] = []

    def draw(model: Any, test: Path, output_dir: Path, **options: Any) -> None:
        calls.append(options["series"])

    monkeypatch.setattr(evaluate_command, "load_model", lambda path: path)
    monkeypatch.setattr(plotting, "plot", draw)
    return calls


@pytest.mark.parametrize("spec, indices", [
    ("0-4", [0, 1, 2, 3, 4]), ("0,3,7", [0, 3, 7]), ("5", [5]),
    (" 0-2, 7 ", [0, 1, 2, 7]), ("2,2,1-3", [2, 1, 3]), ("3-3", [3]), ("1 - 2", [1, 2]),
])
def test_series_option_gives_indices_in_order_without_repeats(
        workspace: Dict[str, Path], drawn: List[Any], spec: str, indices: List[int]) -> None:
    result = invoke("plot", "--model-dir", "m", "--test", workspace["test"], "--series", spec,
                    "--output-dir", workspace["root"] / "unused", "--quiet")
    assert result.exit_code == 0, result.output
    assert drawn == [indices]


def test_no_series_option_leaves_the_choice_to_the_library(workspace: Dict[str, Path],
                                                           drawn: List[Any]) -> None:
    result = invoke("plot", "--model-dir", "m", "--test", workspace["test"],
                    "--output-dir", workspace["root"] / "unused", "--quiet")
    assert result.exit_code == 0, result.output
    assert drawn == [None]


SPEC_HINT = 'give 0-based indices like "0-4", "0,3,7" or "5"'


@pytest.mark.parametrize("spec, message", [
    ("", f'cannot read ""; {SPEC_HINT}'),
    ("a", f'cannot read "a"; {SPEC_HINT}'),
    ("-1", f'cannot read "-1"; {SPEC_HINT}'),
    ("1.5", f'cannot read "1.5"; {SPEC_HINT}'),
    ("0,,2", f'cannot read ""; {SPEC_HINT}'),
    ("1-", f'cannot read "1-"; {SPEC_HINT}'),
    ("0-4x", f'cannot read "0-4x"; {SPEC_HINT}'),
    ("1-2-3", f'cannot read "1-2-3"; {SPEC_HINT}'),
    ("\u00b2", f'cannot read "\u00b2"; {SPEC_HINT}'),
    ("4-2", "the range 4-2 runs backwards"),
    ("0-99999999999", "names more than 1000 series; plot fewer at a time"),
    ("0-499,500-1000", "names more than 1000 series; plot fewer at a time"),
])
def test_malformed_series_is_a_usage_error(workspace: Dict[str, Path], drawn: List[Any],
                                           spec: str, message: str) -> None:
    out = workspace["root"] / "bad"
    result = invoke("plot", "--model-dir", workspace["model"], "--test", workspace["test"],
                    "--series", spec, "--output-dir", out)
    assert result.exit_code == 64
    assert result.stdout == ""
    assert result.stderr == usage_error("plot", f"Invalid value for '--series': {message}")
    assert drawn == []
    assert not out.exists()


def test_unknown_series_names_the_index_and_the_count(workspace: Dict[str, Path]) -> None:
    out = workspace["root"] / "bad"
    result = invoke("plot", "--model-dir", workspace["model"], "--test", workspace["test"],
                    "--series", "2,9", "--output-dir", out, "--quiet")
    assert result.exit_code == 65
    assert result.stdout == ""
    assert result.stderr == (f"Error: {workspace['test']}: no series 9; the test channel has "
                             f"{NUM_SERIES} series (indices 0-{NUM_SERIES - 1})\n")
    assert not out.exists()


def test_missing_model_folder_is_a_one_line_error(workspace: Dict[str, Path]) -> None:
    missing = workspace["root"] / "no-model"
    out = workspace["root"] / "bad"
    result = invoke("plot", "--model-dir", missing, "--test", workspace["test"],
                    "--output-dir", out)
    assert result.exit_code == 66
    assert result.stderr == (f"Error: {missing}: no such model folder (train one with "
                             "`deepar-cli train`)\n")
    assert not out.exists()


def test_quiet_prints_nothing_and_seed_repeats(workspace: Dict[str, Path],
                                               plotted: Tuple[Any, Path]) -> None:
    out = workspace["root"] / "again"
    result = invoke("plot", "--model-dir", workspace["model"], "--test", workspace["test"],
                    "--series", "3,1", "--output-dir", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert result.output == ""
    first = json.loads((plotted[1] / "plot.json").read_text())["series"]
    again = json.loads((out / "plot.json").read_text())["series"]
    # The same seed: each series' band again, whichever other series are plotted with it.
    for index, item in zip((3, 1), again):
        assert item["index"] == index
        assert {k: item[k] for k in ("p10", "p50", "p90")} == {
            k: first[index][k] for k in ("p10", "p50", "p90")}


def test_plot_has_help() -> None:
    result = invoke("plot", "--help")
    assert result.exit_code == 0
    for option in ("--model-dir", "--test", "--series", "--output-dir", "--train", "--seed",
                   "--quiet"):
        assert option in result.output
