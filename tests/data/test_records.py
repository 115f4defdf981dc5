"""SageMaker records and channels: every reader rule, with its exact message."""

from __future__ import annotations

import gzip
import json
import math

import numpy as np
import pytest

from deepar_cli.cli import main
from deepar_cli.data.channels import channel_files, read_channel, write_records
from deepar_cli.data.records import Record, parse_record
from deepar_cli.data.stats import DatasetStats, channel_stats
from deepar_cli.errors import DataError
from helpers import hp_args, write_lines

START = "2016-01-01 00:00:00"


def good(target=(1.0, 2.0, 3.0), **extra):
    return {"start": START, "target": list(target), **extra}


def read_error(path) -> str:
    with pytest.raises(DataError) as info:
        list(read_channel(path))
    return str(info.value)


# --------------------------------------------------------------------------- one record


@pytest.mark.parametrize("record, message", [
    (good(target=[1, 2, 3, "abc"]), '"target" must be a list of numbers, got "abc" at position 3'),
    (good(target=[1, True]), '"target" must be a list of numbers, got true at position 1'),
    (good(target=[1, [2]]), '"target" must be a list of numbers, got [2] at position 1'),
    (good(target=[1, "nan"]), '"target" must be a list of numbers, got "nan" at position 1'),
    ({"start": START, "target": "1, 2"}, '"target" must be a list of numbers, got "1, 2"'),
    ({"start": START, "target": 5}, '"target" must be a list of numbers, got 5'),
    ({"start": START, "target": []}, '"target" must not be empty'),
    ({"start": START}, '"target" is missing'),
    ({"target": [1.0]}, '"start" is missing'),
    ({"start": "2016-13-01 00:00:00", "target": [1.0]},
     '"start" must be a timestamp like "2016-01-01 00:00:00", got "2016-13-01 00:00:00"'),
    ({"start": "yesterday", "target": [1.0]},
     '"start" must be a timestamp like "2016-01-01 00:00:00", got "yesterday"'),
    ({"start": 20160101, "target": [1.0]},
     '"start" must be a timestamp like "2016-01-01 00:00:00", got 20160101'),
    ({"start": None, "target": [1.0]},
     '"start" must be a timestamp like "2016-01-01 00:00:00", got null'),
    (good(cat=[-1]), '"cat" must be a list of non-negative integers, got -1 at position 0'),
    (good(cat=[0, -2]), '"cat" must be a list of non-negative integers, got -2 at position 1'),
    (good(cat=[1.5]), '"cat" must be a list of non-negative integers, got 1.5 at position 0'),
    (good(cat=["a"]), '"cat" must be a list of non-negative integers, got "a" at position 0'),
    (good(cat="a"), '"cat" must be a list of non-negative integers, got "a"'),
    (good(dynamic_feat=[[1.0, 2.0]]),
     '"dynamic_feat" feature 0 has 2 values, expected 3 (the length of "target")'),
    (good(dynamic_feat=[[1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]]),
     '"dynamic_feat" feature 1 has 4 values, expected 3 (the length of "target")'),
    (good(dynamic_feat=[[1.0, None, 3.0]]),
     '"dynamic_feat" must be a list of numbers (no missing values), got null at position 1 '
     "(feature 0)"),
    (good(dynamic_feat=[[1.0, 2.0, "NaN"]]),
     '"dynamic_feat" must be a list of numbers (no missing values), got "NaN" at position 2 '
     "(feature 0)"),
    (good(dynamic_feat=[]),
     '"dynamic_feat" must be a non-empty list of lists of numbers, got []'),
    (good(dynamic_feat=[1.0, 2.0, 3.0]),
     '"dynamic_feat" must be a list of numbers, got 1.0 (feature 0)'),
    ([1, 2, 3], "a record must be a JSON object, got [1,2,3]"),
    ('"just a string"', 'a record must be a JSON object, got "just a string"'),
])
def test_bad_record_is_refused_with_file_line_and_message(tmp_path, record, message):
    path = write_lines(tmp_path / "train.json", [good(), good(), record])
    assert read_error(path) == f"{path}:3: {message}"


def test_long_values_are_shortened_in_messages(tmp_path):
    path = write_lines(tmp_path / "train.json", [{"start": START, "target": "x" * 100}])
    assert read_error(path) == f'{path}:1: "target" must be a list of numbers, got "{"x" * 36}...'


def test_line_separators_in_values_are_escaped_in_messages(tmp_path):
    """JSON leaves U+2028 and NEL unescaped; the message must still be one line."""
    path = write_lines(tmp_path / "train.json", [{"start": "a\u2028b\x85c", "target": [1]}])
    assert read_error(path) == (f'{path}:1: "start" must be a timestamp like '
                                '"2016-01-01 00:00:00", got "a\\u2028b\\u0085c"')


def test_invalid_json_line(tmp_path):
    path = write_lines(tmp_path / "train.json", [good(), '{"start": "2016-01-01", "target": [1,'])
    message = read_error(path)
    assert message.startswith(f"{path}:2: not valid JSON (")
    assert message.endswith(")")


def test_nan_literal_is_not_json(tmp_path):
    path = write_lines(tmp_path / "train.json", ['{"start": "2016-01-01", "target": [1, NaN]}'])
    assert read_error(path).startswith(f"{path}:1: not valid JSON (")


def test_line_numbers_count_blank_lines(tmp_path):
    path = write_lines(tmp_path / "train.json", [good(), "", "   ", {"start": START}])
    assert read_error(path) == f'{path}:4: "target" is missing'


def test_null_and_nan_string_are_missing_values(tmp_path):
    path = write_lines(tmp_path / "train.json",
                       [good(target=[1, None, "NaN", 4.5]), good(target=[None])])
    first, second = read_channel(path)
    assert first.target.dtype == np.float64
    assert first.target[0] == 1.0 and first.target[3] == 4.5
    assert math.isnan(first.target[1]) and math.isnan(first.target[2])
    assert second.target.size == 1 and math.isnan(second.target[0])
    assert first.source == f"{path}:1"
    assert second.source == f"{path}:2"


def test_good_record_fields(tmp_path):
    feat = [[0.5, 0.25, 0.125], [1.0, 2.0, 3.0]]
    path = write_lines(tmp_path / "train.json", [
        good(cat=[2, 0], dynamic_feat=feat),
        {"start": "2016-02-03", "target": [7], "cat": [4, 1],  # a date alone is fine
         "dynamic_feat": [[1], [2]]},
    ])
    first, second = read_channel(path)
    assert first.start == START
    assert first.target.tolist() == [1.0, 2.0, 3.0]
    assert first.cat == [2, 0]
    assert first.dynamic_feat.shape == (2, 3)
    assert first.dynamic_feat.tolist() == feat
    assert second.start == "2016-02-03"
    assert second.cat == [4, 1]


def test_scalar_cat_is_one_category(jsonl):
    (record,) = read_channel(jsonl([good(cat=3)]))
    assert record.cat == [3]


def test_infinity_is_refused():
    # JSON cannot spell infinity, but Parquet and Python callers can
    with pytest.raises(ValueError) as info:
        parse_record(good(target=[1.0, math.inf]))
    assert str(info.value) == '"target" must hold finite numbers, got infinity at position 1'


def test_dynamic_feat_for_inference_reaches_past_the_target(tmp_path):
    path = write_lines(tmp_path / "req.json",
                       [good(dynamic_feat=[[0.0] * 5]), good(dynamic_feat=[[0.0] * 3])])
    with pytest.raises(DataError) as info:
        list(read_channel(path, extra_feat_length=2))
    assert str(info.value) == (
        f'{path}:2: "dynamic_feat" feature 0 has 3 values, expected 5 (the length of '
        '"target" plus prediction_length, 3 + 2)'
    )


@pytest.mark.parametrize("second, message", [
    (good(cat=[0, 1]), '"cat" has 2 values here but 1 in the first record ({first}); '
                       "every record must have the same count"),
    (good(), '"cat" has no values here but 1 in the first record ({first}); '
             "every record must have the same count"),
])
def test_cat_count_must_not_change(tmp_path, second, message):
    path = write_lines(tmp_path / "train.json", [good(cat=[1]), second])
    assert read_error(path) == f"{path}:2: " + message.format(first=f"{path}:1")


def test_dynamic_feat_count_must_not_change(tmp_path):
    path = write_lines(tmp_path / "train.json", [
        good(), good(dynamic_feat=[[1.0, 2.0, 3.0]]),
    ])
    assert read_error(path) == (
        f'{path}:2: "dynamic_feat" has 1 values here but none in the first record '
        f"({path}:1); every record must have the same count"
    )


def test_empty_start_is_refused(tmp_path):
    path = write_lines(tmp_path / "train.json", [{"start": "", "target": [1.0]}])
    assert read_error(path) == (
        f'{path}:1: "start" must be a timestamp like "2016-01-01 00:00:00", got ""'
    )


# --------------------------------------------------------------------------- channels


def test_empty_file_channel(tmp_path):
    path = write_lines(tmp_path / "train.json", ["", "  "])
    assert read_error(path) == f"{path}: the channel is empty (no records)"


def test_missing_channel(tmp_path):
    path = tmp_path / "nope.json"
    assert read_error(path) == f"{path}: no such file or folder"


def test_folder_without_data_files(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    (folder / "README.txt").write_text("hello")
    (folder / "_SUCCESS").write_text("")
    assert read_error(folder) == (
        f"{folder}: the channel holds no .json/.jsonl/.json.gz/.jsonl.gz/.parquet files"
    )


def test_folder_channel_reads_data_files_in_name_order_and_skips_markers(tmp_path):
    folder = tmp_path / "train"
    write_lines(folder / "b.jsonl", [good(target=[2.0])])
    write_lines(folder / "a.json", [good(target=[1.0]), good(target=[1.5])])
    write_lines(folder / "sub" / "c.json", [good(target=[3.0])])
    write_lines(folder / ".hidden.json", ["this is not JSON"])
    write_lines(folder / ".cache" / "d.json", ["this is not JSON either"])
    (folder / "_SUCCESS").write_text("")
    (folder / "notes.txt").write_text("not a channel file")
    with gzip.open(folder / "e.json.gz", "wt") as handle:
        handle.write(json.dumps(good(target=[4.0])) + "\n")
    assert channel_files(folder) == [folder / "a.json", folder / "b.jsonl",
                                     folder / "e.json.gz", folder / "sub" / "c.json"]
    records = list(read_channel(folder))
    assert [r.target.tolist() for r in records] == [[1.0], [1.5], [2.0], [4.0], [3.0]]
    assert records[2].source == f"{folder / 'b.jsonl'}:1"


def test_consistency_is_checked_across_files_of_a_folder(tmp_path):
    folder = tmp_path / "train"
    write_lines(folder / "a.json", [good(cat=[0])])
    write_lines(folder / "b.json", [good(cat=[0, 1])])
    assert read_error(folder) == (
        f'{folder / "b.json"}:1: "cat" has 2 values here but 1 in the first record '
        f'({folder / "a.json"}:1); every record must have the same count'
    )


def test_json_gz_channel(tmp_path):
    path = tmp_path / "train.json.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(json.dumps(good(target=[1, None, 3], cat=[2])) + "\n")
        handle.write(json.dumps(good(target=[4, 5], cat=[1])) + "\n")
    records = list(read_channel(path))
    assert len(records) == 2
    assert records[0].target[0] == 1.0 and math.isnan(records[0].target[1])
    assert records[1].target.tolist() == [4.0, 5.0]
    assert [r.cat for r in records] == [[2], [1]]
    assert records[1].source == f"{path}:2"


def test_json_gz_errors_name_the_line(tmp_path):
    path = tmp_path / "train.json.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(json.dumps(good()) + "\n")
        handle.write(json.dumps(good(target=[1, "x"])) + "\n")
    assert read_error(path) == (
        f'{path}:2: "target" must be a list of numbers, got "x" at position 1'
    )


# A gzip header, then a deflate block of the reserved type 3: zlib refuses it.
BAD_DEFLATE = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff\x07" + bytes(20)


@pytest.mark.parametrize("data, reason", [
    (b"this is not gzip", "Not a gzipped file (b'th')"),
    (BAD_DEFLATE, "Error -3 while decompressing data: invalid block type"),
    (gzip.compress(b'{"start": "2016-01-01", "target": [1]}\n')[:-12],
     "Compressed file ended before the end-of-stream marker was reached"),
], ids=["header", "deflate", "truncated"])
def test_corrupt_gzip(tmp_path, data, reason):
    path = tmp_path / "train.json.gz"
    path.write_bytes(data)
    assert read_error(path) == f"{path}: not a readable gzip file ({reason})"


def test_records_nested_too_deep(tmp_path):
    """orjson refuses JSON nested over 1024 levels; shallower values are outlined in
    messages (their repr would raise RecursionError)."""
    head = '{"start": "2016-01-01", "target": '
    path = write_lines(tmp_path / "train.json", [head + "[" * 1000 + "]" * 1000 + "}"])
    assert read_error(path) == (f'{path}:1: "target" must be a list of numbers, got '
                                "[[[[...]]]] at position 0")
    path = write_lines(tmp_path / "train.json", [head + "[" * 3000 + "]" * 3000 + "}"])
    assert read_error(path) == (f"{path}:1: not valid JSON (depth limit exceeded: line 1 "
                                f"column {len(head) + 1025} (char {len(head) + 1024}))")


def test_write_and_read_back_json_lines_exactly(tmp_path):
    records = [Record(START, np.array([0.1, math.nan, 1 / 3]), [1],
                      np.array([[1.0, 2.0, 3.0]])),
               Record(START, np.array([2.5]), [0], np.array([[0.0]]))]
    path = tmp_path / "out.jsonl"
    assert write_records(path, records) == 2
    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {"start": START, "target": [0.1, "NaN", 1 / 3], "cat": [1],
                                    "dynamic_feat": [[1.0, 2.0, 3.0]]}
    back = list(read_channel(path))
    assert back[0].target[2] == 1 / 3 and math.isnan(back[0].target[1])
    assert back[1].dynamic_feat.tolist() == [[0.0]]


@pytest.mark.parquet
def test_parquet_channel(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist([
        {"start": START, "target": [1.0, None, 3.0], "cat": [1]},
        {"start": START, "target": [4.0, 5.0], "cat": [0]},
    ]), path)
    records = list(read_channel(path))
    assert [r.cat for r in records] == [[1], [0]]
    assert records[0].target[0] == 1.0 and math.isnan(records[0].target[1])
    assert records[1].target.tolist() == [4.0, 5.0]
    assert records[1].source == f"{path}:2"


@pytest.mark.parquet
def test_parquet_errors_name_the_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist([
        {"start": START, "target": [1.0]}, {"start": "not a date", "target": [1.0]},
    ]), path)
    assert read_error(path) == (
        f'{path}:2: "start" must be a timestamp like "2016-01-01 00:00:00", got "not a date"'
    )


@pytest.mark.parquet
@pytest.mark.parametrize("kind", ["timestamp[s]", "timestamp[ns]", "timestamp[us, UTC]",
                                  "date32"])
def test_parquet_start_may_be_a_timestamp_column(tmp_path, kind):
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {"timestamp[s]": pa.timestamp("s"), "timestamp[ns]": pa.timestamp("ns"),
             "timestamp[us, UTC]": pa.timestamp("us", tz="UTC"), "date32": pa.date32()}
    path = tmp_path / "train.parquet"
    start = datetime.datetime(2016, 1, 2)
    pq.write_table(pa.table({"start": pa.array([start, start], type=types[kind]),
                             "target": [[1.0, 2.0], [3.0]]}), path)
    records = list(read_channel(path))
    expected = "2016-01-02 00:00:00+00:00" if "UTC" in kind else "2016-01-02 00:00:00"
    assert [r.start for r in records] == [expected, expected]


@pytest.mark.parquet
def test_parquet_round_trip_through_write_records(tmp_path):
    records = [Record(START, np.array([0.1, math.nan, 1 / 3]), [1],
                      np.array([[1.0, 2.0, 3.0]]))]
    path = tmp_path / "out.parquet"
    assert write_records(path, records) == 1
    (back,) = read_channel(path)
    assert back.target[0] == 0.1 and math.isnan(back.target[1]) and back.target[2] == 1 / 3
    assert back.cat == [1]
    assert back.dynamic_feat.tolist() == [[1.0, 2.0, 3.0]]


@pytest.mark.parquet
def test_not_a_parquet_file(tmp_path):
    path = tmp_path / "train.parquet"
    path.write_bytes(b"PAR? nope")
    assert read_error(path).startswith(f"{path}: not a readable Parquet file (")


# --------------------------------------------------------------------------- statistics


def test_dataset_stats_on_a_tiny_channel(jsonl):
    path = jsonl([
        good(target=[1, 2, None], cat=[1, 0]),
        good(target=[4, "NaN", 6, 8], cat=[0, 3]),
    ])
    stats = channel_stats(path)
    assert stats.num_series == 2
    assert stats.num_observations == 7
    assert stats.num_missing == 2
    assert stats.min_target == 1.0
    assert stats.max_target == 8.0
    assert stats.mean_target == pytest.approx(4.2, abs=1e-12)  # (1+2+4+6+8)/5
    assert stats.mean_length == 3.5
    assert (stats.min_length, stats.max_length) == (3, 4)
    assert stats.num_cat == 2 and stats.cat_max == [1, 3]
    assert stats.num_dynamic_feat is None
    assert stats.as_dict() == {
        "num_series": 2, "num_observations": 7, "mean_target_length": 3.5,
        "min_target_length": 3, "max_target_length": 4, "min_target": 1.0,
        "mean_target": stats.mean_target, "max_target": 8.0, "missing_values": True,
        "num_missing": 2, "num_cat": 2, "num_dynamic_feat": None,
    }
    assert stats.lines() == [
        "number of time series: 2",
        "number of observations: 7",
        "mean target length: 3.5",
        "min/mean/max target: 1/4.2/8",
        "contains missing values: yes (2)",
    ]


def test_dataset_stats_without_missing_values(jsonl):
    path = jsonl([good(target=[0.5, 1.5], dynamic_feat=[[0, 0], [1, 1], [2, 2]])])
    stats = channel_stats(path)
    assert stats.lines()[-1] == "contains missing values: no"
    assert stats.as_dict()["missing_values"] is False
    assert stats.num_dynamic_feat == 3
    assert stats.mean_target == 1.0


def test_dataset_stats_all_missing():
    stats = DatasetStats()
    stats.add(Record(START, np.array([math.nan, math.nan])))
    figures = stats.as_dict()
    assert figures["min_target"] is None
    assert figures["mean_target"] is None
    assert figures["max_target"] is None
    assert figures["num_missing"] == 2


# --------------------------------------------------------------------------- the CLI


def test_cli_turns_a_bad_train_channel_into_one_line(runner, jsonl, tmp_path, tiny_hp):
    path = jsonl([good(), good(), good(target=[1, 2, 3, "abc"])], name="train.json")
    model_dir = tmp_path / "model"
    result = runner.invoke(main, ["train", "--train", str(path), "--model-dir", str(model_dir),
                                  "--quiet", *hp_args(tiny_hp)])
    assert result.exit_code == 65
    assert result.stderr == (
        f'Error: {path}:3: "target" must be a list of numbers, got "abc" at position 3\n'
    )
    assert "Traceback" not in result.output
    assert not model_dir.exists()


def test_cli_bad_test_channel_is_exit_65(runner, jsonl, tiny_data, tmp_path, tiny_hp):
    path = jsonl([good(), {"start": START}], name="test.json")
    result = runner.invoke(main, ["train", "--train", str(tiny_data.train), "--test", str(path),
                                  "--model-dir", str(tmp_path / "model"), "--quiet",
                                  *hp_args(tiny_hp)])
    assert result.exit_code == 65
    assert result.stderr == f'Error: {path}:2: "target" is missing\n'


@pytest.mark.parametrize("command", ["train", "evaluate", "plot", "tune", "predict"])
def test_cli_corrupt_gzip_is_bad_data_in_every_command(runner, tiny_model, tmp_path, tiny_hp,
                                                       command):
    path = tmp_path / "data.json.gz"
    path.write_bytes(BAD_DEFLATE)
    hp_file = tmp_path / "hyperparameters.json"
    hp_file.write_text(json.dumps(tiny_hp))
    out = tmp_path / "out"
    args = {
        "train": ["--train", path, "--hyperparameters", hp_file, "--model-dir", out],
        "evaluate": ["--model-dir", tiny_model.dir, "--test", path, "--output-dir", out],
        "plot": ["--model-dir", tiny_model.dir, "--test", path, "--output-dir", out],
        "tune": ["--train", path, "--hyperparameters", hp_file, "--output-dir", out],
        "predict": ["--model-dir", tiny_model.dir, "--input", path, "--output", out],
    }[command]
    result = runner.invoke(main, [command, *map(str, args)])
    assert result.exit_code == 65
    assert result.stderr == (f"Error: {path}: not a readable gzip file (Error -3 while "
                             "decompressing data: invalid block type)\n")
    assert not out.exists()
