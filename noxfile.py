"""Sessions: `nox -s demo` (the notebook end to end), `tests`, `lint`, `bench`."""

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True
PYTHON = "3.11"


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """Generate the notebook's data, train, evaluate, plot and predict, into ./demo."""
    session.install("-e", ".")
    out = "demo"
    session.run("deepar-cli", "generate", "--output-dir", f"{out}/data")
    session.run("deepar-cli", "train", "--train", f"{out}/data/train.json",
                "--test", f"{out}/data/test.json", "--hyperparameters",
                "data/hyperparameters.json", "--model-dir", f"{out}/model",
                "--log-file", f"{out}/train-log.jsonl")
    session.run("deepar-cli", "evaluate", "--model-dir", f"{out}/model",
                "--test", f"{out}/data/test.json", "--output-dir", f"{out}/evaluation")
    session.run("deepar-cli", "plot", "--model-dir", f"{out}/model",
                "--test", f"{out}/data/test.json", "--series", "0-4",
                "--output-dir", f"{out}/plots")
    session.run("deepar-cli", "predict", "--model-dir", f"{out}/model",
                "--input", f"{out}/data/test.json", "--output", f"{out}/predictions.jsonl")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite, as CI runs it."""
    session.install("-e", ".[test]")
    session.run("pytest", *(session.posargs or ["-q"]))


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """deepar-cli against the plain-GluonTS peer, side by side: `nox -s bench -- --rounds 3`."""
    session.install("-e", ".[test]")
    session.run("python", "benchmarks/bench.py", *session.posargs)
