"""Nothing the user wrote is lost: `train`, `tune` and `predict` never replace, empty or
write over what they did not write, and refuse before any work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any, List

import pytest
from click.testing import CliRunner

from deepar_cli import atomic
from deepar_cli.cli import main
from helpers import TINY_HP, hp_args


def run(*args: Any) -> Any:
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="deepar-cli")


def train(channel: Path, model_dir: Path, *more: Any) -> Any:
    return run("train", "--train", channel, "--model-dir", model_dir, "--quiet",
               *hp_args(TINY_HP), *more)


def snapshot(folder: Path) -> List[tuple]:
    return sorted((str(p.relative_to(folder)), p.read_bytes() if p.is_file() else None)
                  for p in folder.rglob("*"))


@pytest.fixture
def channel(tmp_path: Path, tiny_data: SimpleNamespace) -> Path:
    """A channel folder of the user's, with a file of theirs beside the data."""
    folder = tmp_path / "u"
    folder.mkdir()
    shutil.copy(tiny_data.train, folder / "train.json")
    (folder / "notes.txt").write_text("mine")
    return folder


def test_train_refuses_a_folder_of_the_users(tmp_path: Path, channel: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    result = train(channel, mine)
    assert result.exit_code == 73
    assert result.output == (f"Error: {mine}: exists and is not a deepar-cli model folder "
                             "(it holds notes.txt); give a new or empty folder\n")
    assert snapshot(mine) == [("notes.txt", b"mine")]


@pytest.mark.parametrize("where", ["u", "u/model", "u/.."])
def test_train_refuses_a_model_dir_that_is_holds_or_lies_in_its_channel(
        tmp_path: Path, channel: Path, where: str) -> None:
    before = snapshot(channel)
    result = train(channel, tmp_path / where)
    relation = {"u": "is", "u/model": "lies inside", "u/..": "holds"}[where]
    assert result.exit_code == 64
    assert result.output == (f"Error: --model-dir {tmp_path / where} {relation} the input "
                             f"{channel}; write the output somewhere else\n")
    assert snapshot(channel) == before


def test_train_refuses_a_model_dir_that_holds_its_test_channel(
        tmp_path: Path, tiny_data: SimpleNamespace) -> None:
    test = tmp_path / "model" / "test.json"
    test.parent.mkdir()
    shutil.copy(tiny_data.test, test)
    result = train(tiny_data.train, tmp_path / "model", "--test", test)
    assert result.exit_code == 64
    assert result.output == (f"Error: --model-dir {tmp_path / 'model'} holds the input {test}; "
                             "write the output somewhere else\n")
    assert test.read_bytes() == tiny_data.test.read_bytes()


def test_train_replaces_its_own_model_folder_and_fills_an_empty_one(
        tmp_path: Path, tiny_data: SimpleNamespace, tiny_model: SimpleNamespace) -> None:
    earlier = tmp_path / "model"
    shutil.copytree(tiny_model.dir, earlier)
    (earlier / "evaluation").mkdir()  # what `evaluate` writes by default
    (tmp_path / ".model.old").mkdir()  # a user's, with the name replacing once used
    (tmp_path / ".model.old" / "keep.txt").write_text("mine")
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder in (earlier, empty):
        result = train(tiny_data.train, folder, "--seed", "7")
        assert result.exit_code == 0, result.output
        assert json.loads((folder / "training.json").read_text())["seed"] == 7
        assert sorted(p.name for p in folder.iterdir()) == [
            "hyperparameters.json", "model.json", "predictor", "training.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.old", "empty", "model"]
    assert (tmp_path / ".model.old" / "keep.txt").read_text() == "mine"


def test_tune_refuses_a_folder_of_the_users_and_one_holding_its_channel(
        tmp_path: Path, tiny_data: SimpleNamespace) -> None:
    static = tmp_path / "static.json"
    static.write_text(json.dumps({k: v for k, v in TINY_HP.items()}))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.txt").write_text("mine")
    result = run("tune", "--train", tiny_data.train, "--hyperparameters", static,
                 "--output-dir", mine, "--quiet")
    assert result.exit_code == 73
    assert result.output == (f"Error: {mine}: exists and is not a deepar-cli tune folder "
                             "(it holds report.txt); give a new or empty folder\n")
    assert snapshot(mine) == [("report.txt", b"mine")]
    result = run("tune", "--train", tiny_data.train, "--hyperparameters", static,
                 "--output-dir", tmp_path, "--quiet")
    assert result.exit_code == 64
    assert result.output == (f"Error: --output-dir {tmp_path} holds the input {static}; "
                             "write the output somewhere else\n")


def test_predict_refuses_to_write_over_its_input(tmp_path: Path, tiny_model: SimpleNamespace,
                                                 tiny_data: SimpleNamespace,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copy(tiny_data.test, tmp_path / "in.json")
    result = run("predict", "--model-dir", tiny_model.dir, "--input", "in.json",
                 "--output", "./in.json")
    assert result.exit_code == 64
    assert result.output == ("Error: --output in.json is the input in.json; write the output "
                             "somewhere else\n")
    assert (tmp_path / "in.json").read_bytes() == tiny_data.test.read_bytes()
    (tmp_path / "batch").mkdir()
    shutil.copy(tiny_data.test, tmp_path / "batch" / "part-0.jsonl")
    result = run("predict", "--model-dir", tiny_model.dir, "--input", "batch",
                 "--output", "batch/out")
    assert result.exit_code == 64
    assert result.output == ("Error: --output batch/out lies inside the input batch; write "
                             "the output somewhere else\n")
    assert sorted(p.name for p in (tmp_path / "batch").iterdir()) == ["part-0.jsonl"]


def test_predict_checks_its_output_before_reading_the_input(
        tmp_path: Path, tiny_model: SimpleNamespace, jsonl: Any) -> None:
    """A folder in the way is found first: the input's bad second line is never reached."""
    records = jsonl([json.loads(tiny_model.test.read_text().splitlines()[0]), "{bad"])
    (tmp_path / "out.jsonl").mkdir()
    result = run("predict", "--model-dir", tiny_model.dir, "--input", records,
                 "--output", tmp_path / "out.jsonl")
    assert result.exit_code == 73
    assert result.output == f"Error: {tmp_path / 'out.jsonl'}: cannot be written (it is a folder)\n"


def test_a_foreign_folder_check_accepts_only_what_deepar_cli_writes(tmp_path: Path) -> None:
    (tmp_path / "model.json").write_text("{}")
    (tmp_path / ".model.json.k2j3.tmp").write_text("")  # a write a crash cut short
    atomic.refuse_foreign_dir(tmp_path, frozenset({"model.json"}), "model folder")
    (tmp_path / ".hidden.tmp").write_text("")
    with pytest.raises(atomic.OutputError, match=r"\(it holds \.hidden\.tmp\)"):
        atomic.refuse_foreign_dir(tmp_path, frozenset({"model.json"}), "model folder")
