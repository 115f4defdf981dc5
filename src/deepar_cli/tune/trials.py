"""One trial of a tune: the tuning job every worker runs trials of, a trial's states, its
training (`Objective`), and finding trials whose process died.

A trial trains with `deepar_cli.training.train` on the static hyperparameters
plus a point of the ranges and is scored on the objective SageMaker's DeepAR emits
(test:mean_wQuantileLoss, test:RMSE or train:final_loss). A running trial holds a lock on its
log; the system frees it when the process dies, so the next run finds the trial and queues
its point again.
"""

from __future__ import annotations

import fcntl
import math
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import optuna

from deepar_cli.config.hyperparameters import resolve
from deepar_cli.config.tuning_config import ParameterRange, TuningConfig
from deepar_cli.errors import DeepARCliError
from deepar_cli.model import modelfolder
from deepar_cli.training import Log


class _Diverged(DeepARCliError):
    """A trial whose training loss is not a number."""


class TrialFailed(Exception):
    """Ends a trial as FAIL (the reason is in its user attributes); the study goes on."""


class _Stopped(Exception):
    """A signal or MaxRuntimeInSeconds stops a running trial at an epoch's end."""


@dataclass(frozen=True)
class TuningJob:
    """What every worker needs to run trials (picklable, for spawned workers)."""

    storage: str
    study_name: str
    config: TuningConfig
    static: Dict[str, Any]
    train: Path  # the channels a trial trains and scores on
    test: Optional[Path]
    trials_dir: Path
    seed: int
    deadline: Optional[float] = None  # time.time() past which no epoch starts
    windows: int = 1  # rolling windows of the test channel the objective pools


@dataclass
class TuneResult:
    """What `tune` did: the counts, the best trial, the files written, the signal if any."""

    counts: Dict[str, int]
    best: Optional[Dict[str, Any]] = None
    stop_reason: Optional[str] = None
    signal: Optional[int] = None
    files: List[Path] = field(default_factory=list)


def study_trials(study: Any) -> List[Any]:
    """The study's trials, without those a race made surplus (never run)."""
    return [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("skipped")]


def state_of(trial: Any) -> str:
    """COMPLETE, PRUNED, FAILED (counts as a job), STOPPED (runs again) or RUNNING/WAITING."""
    name = trial.state.name
    if name == "FAIL":
        return "FAILED" if "fail_reason" in trial.user_attrs else "STOPPED"
    return name


def counts_as_job(trial: Any) -> bool:
    """Whether a trial uses up one of MaxNumberOfTrainingJobs."""
    return state_of(trial) in ("COMPLETE", "PRUNED", "FAILED")


def completed(trials: Sequence[Any]) -> List[Any]:
    """The COMPLETE trials, those with an objective value."""
    return [t for t in trials if state_of(t) == "COMPLETE"]


def best_trial(trials: Sequence[Any]) -> Optional[Any]:
    """The complete trial with the lowest objective (the earlier of equals), if any."""
    complete = completed(trials)
    return min(complete, key=lambda t: (t.value, t.number)) if complete else None


def _suggest(r: ParameterRange, trial: Any) -> Any:
    if r.kind == "categorical":
        return trial.suggest_categorical(r.name, list(r.values))
    log = r.scaling == "Logarithmic"
    if r.kind == "integer":
        return trial.suggest_int(r.name, int(r.low), int(r.high), log=log)
    if r.scaling == "ReverseLogarithmic":  # dense near the top of [low, high] < 1
        return 1.0 - trial.suggest_float(f"1-{r.name}", 1.0 - r.high, 1.0 - r.low, log=True)
    return trial.suggest_float(r.name, r.low, r.high, log=log)


def _objective_value(summary: Mapping[str, Any], metric: str) -> float:
    if metric == "train:final_loss":
        return float(summary["final_loss"])
    return float(summary["test_metrics"][metric.split(":", 1)[1]])


def finite(values: Mapping[str, float]) -> Dict[str, Optional[float]]:
    """Figures as JSON can hold them: NaN and infinities become None."""
    return {k: (float(v) if math.isfinite(v) else None) for k, v in values.items()}


def failure_reason(exc: BaseException) -> str:
    """One line saying why a trial failed."""
    lines = str(exc).strip().splitlines()
    text = lines[0][:300] if lines else ""
    return text if isinstance(exc, DeepARCliError) else f"{type(exc).__name__}: {text}"


@dataclass
class _EpochHook:
    """A trial's `log` callback: the trial's log file, and per epoch the training loss for
    the pruner, a stop request, or the runtime limit."""

    trial: Any
    file: Log
    stop: threading.Event
    deadline: Optional[float]

    def __call__(self, event: str, figures: Dict[str, Any]) -> None:
        self.file(event, figures)
        if event != "epoch":
            return
        epoch, loss = figures["epoch"], figures["loss"]
        if not math.isfinite(loss):
            raise _Diverged(f"the training loss is {loss} at epoch {epoch}")
        self.trial.report(loss, epoch)
        if self.stop.is_set():
            raise _Stopped("stopped by a signal")
        if self.deadline is not None and time.time() >= self.deadline:
            raise _Stopped("MaxRuntimeInSeconds reached")
        if self.trial.should_prune():
            self.trial.set_user_attr("pruned_at_epoch", epoch)
            raise optuna.TrialPruned(f"pruned at epoch {epoch}")


@dataclass
class Objective:
    """One trial: `train` on the trial channels with the trial's hyperparameters."""

    job: TuningJob
    stop: threading.Event
    held: Optional[int] = None  # the lock on the last trial's log: see fail_dead

    def __call__(self, trial: Any) -> float:
        from gluonts.env import env

        from deepar_cli.evaluation.backtest import score_channel
        from deepar_cli.training import train
        from deepar_cli.tune.reporting import Reporter

        if not self._in_budget(trial):
            trial.set_user_attr("skipped", True)
            raise TrialFailed("MaxNumberOfTrainingJobs already started")
        values = {r.name: _suggest(r, trial) for r in self.job.config.ranges}
        folder = self.job.trials_dir / str(trial.number)
        folder.mkdir(parents=True, exist_ok=True)
        self.release()
        self.held = _lock(folder / "log.jsonl")  # before model_dir tells where to look
        for key, value in (("hyperparameters", values), ("host", socket.gethostname()),
                           ("model_dir", str(folder / "model")),
                           ("omp_threads", os.environ.get("OMP_NUM_THREADS"))):
            trial.set_user_attr(key, value)
        try:
            with open(folder / "log.jsonl", "w") as handle, env._let(use_tqdm=False):
                hook = _EpochHook(trial, Reporter("json", stream=handle), self.stop,
                                  self.job.deadline)
                hp = resolve({**self.job.static, **values})
                pooled = self.job.test is not None and self.job.windows > 1
                summary = train(self.job.train, hp, folder / "model",
                                test_channel=None if pooled else self.job.test,
                                seed=self.job.seed, log=hook)
                if pooled:
                    summary["test_metrics"] = score_channel(
                        modelfolder.load(folder / "model"), self.job.test,
                        seed=self.job.seed, windows=self.job.windows)
        except optuna.TrialPruned:
            raise
        except _Stopped as stopped:
            trial.set_user_attr("stopped", str(stopped))
            trial.study.enqueue_trial(trial.params)  # the next run tries this point again
            raise TrialFailed(str(stopped)) from None
        except Exception as exc:  # NaN loss, an impossible combination, a typed error ...
            trial.set_user_attr("fail_reason", failure_reason(exc))
            raise TrialFailed(failure_reason(exc)) from None
        trial.set_user_attr("final_loss", summary["final_loss"])
        trial.set_user_attr("best_epoch", summary["best_epoch"])
        trial.set_user_attr("test_metrics", finite(summary.get("test_metrics", {})))
        value = _objective_value(summary, self.job.config.objective)
        if not math.isfinite(value):
            trial.set_user_attr("fail_reason", f"{self.job.config.objective} is {value}")
            raise TrialFailed(f"{self.job.config.objective} is {value}")
        return value

    def _in_budget(self, trial: Any) -> bool:
        """Whether fewer than MaxNumberOfTrainingJobs trials started before this one (two
        workers may ask for the last slot at once; the later trial number gives way)."""
        ahead = [t for t in study_trials(trial.study) if t.number < trial.number
                 and (counts_as_job(t) or t.state.name == "RUNNING")]
        return len(ahead) < self.job.config.trials

    def release(self) -> None:
        """Let go of the last trial's lock (kept until Optuna has recorded its end)."""
        if self.held is not None:
            os.close(self.held)
            self.held = None


def _lock(path: Path, create: bool = True) -> Optional[int]:
    """An exclusive lock on `path`, held while the descriptor is open and freed by the system
    when the process dies; None if another holds it, or locks are not supported."""
    fd = os.open(path, os.O_WRONLY | (os.O_CREAT if create else 0), 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def fail_dead(study: Any) -> None:
    """Fail the RUNNING trials whose process is gone (killed, or its machine rebooted) and
    queue their points again, at once: a running trial's process holds a lock on its log, and
    the system frees it when the process dies. Other machines' trials wait for their
    heartbeat to go stale (GRACE_S)."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if "model_dir" not in attrs or attrs.get("host") != socket.gethostname():
            continue  # not yet locked, or another machine's
        try:
            fd = _lock(Path(attrs["model_dir"]).parent / "log.jsonl", create=False)
        except OSError:  # its log is gone
            continue
        if fd is None:  # its process holds the lock: running
            continue
        try:  # as optuna.storages.fail_stale_trials does it
            if study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                requeue(study, trial)
        except UpdateFinishedTrialError:  # it ended between the two looks
            pass
        finally:
            os.close(fd)


def requeue(study: Any, trial: Any) -> None:
    """A trial whose process died runs its point again, as a stopped one does."""
    study.enqueue_trial(trial.params)


def shown_url(url: str) -> str:
    """A storage URL without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: shown as given, opening it fails later
        return url


def model_here(trial: Any) -> bool:
    """Whether the trial's model is in its folder on this machine."""
    return trial.user_attrs.get("host") == socket.gethostname() and Path(
        trial.user_attrs["model_dir"]).is_dir()
