"""Every command of `deepar-cli` has working help (new commands are picked up by themselves)."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from deepar_cli import __version__
from deepar_cli.cli import main
from helpers import usage_error

COMMANDS = sorted(main.commands)


def test_the_group_has_every_command_of_the_workflow():
    assert set(COMMANDS) == {"generate", "train", "evaluate", "plot", "predict", "serve",
                             "tune"}


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_group_help_lists_every_command(runner, flag):
    result = runner.invoke(main, [flag], prog_name="deepar-cli")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: deepar-cli [OPTIONS] COMMAND [ARGS]...")
    assert "Amazon SageMaker's DeepAR workflow, done locally on GluonTS." in result.output
    for name in COMMANDS:
        assert f"  {name} " in result.output


@pytest.mark.parametrize("name", COMMANDS)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_command_help(runner, name, flag):
    command = main.commands[name]
    result = runner.invoke(main, [name, flag], prog_name="deepar-cli")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert result.output.startswith(f"Usage: deepar-cli {name} [OPTIONS]")
    first_line = (command.help or "").strip().splitlines()[0]
    assert first_line  # every command says what it does
    flat = " ".join(result.output.split())  # help text is re-wrapped to the terminal width
    assert " ".join(first_line.split()) in flat
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        for opt in param.opts:
            if opt.startswith("--"):
                assert opt in result.output


def test_tune_help_names_the_postgresql_driver_the_extra_installs(runner):
    """SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; [postgres] installs psycopg2."""
    result = runner.invoke(main, ["tune", "--help"], prog_name="deepar-cli")
    flat = " ".join(result.output.split())
    assert "e.g. postgresql+psycopg2://user@host/db with the [postgres] extra" in flat
    assert "postgresql://" not in flat


def test_version(runner):
    result = runner.invoke(main, ["--version"], prog_name="deepar-cli")
    assert result.exit_code == 0
    assert result.output == f"deepar-cli, version {__version__}\n"


def test_unknown_command_is_a_usage_error(runner):
    result = runner.invoke(main, ["fly"], prog_name="deepar-cli")
    assert result.exit_code == 64
    assert result.stdout == ""
    assert result.stderr == usage_error("", "No such command 'fly'.")


def test_the_console_script_and_python_m_exit_with_the_commands_code():
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "deepar-cli"]
    assert script.value == "deepar_cli.cli:run"
    for args, code, out, err in [(["--version"], 0, f"deepar-cli, version {__version__}\n", ""),
                                 (["fly"], 64, "", "Error: No such command 'fly'.\n")]:
        result = subprocess.run([sys.executable, "-m", "deepar_cli", *args],
                                capture_output=True, text=True)
        assert (result.returncode, result.stdout) == (code, out)
        assert result.stderr.endswith(err)
