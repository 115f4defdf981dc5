"""`deepar-cli tune`: SageMaker's automatic model tuning for DeepAR, on Optuna.

A study of trials, each one `deepar_cli.backends.mxnet.training.train` run with the static
hyperparameters
plus a point of the ranges, scored on the objective SageMaker's DeepAR emits
(test:mean_wQuantileLoss, test:RMSE or train:final_loss). The study lives in an Optuna RDB
storage (an SQLite file in the output folder unless a URL is given), so an interrupted tune
resumes, and the same command on several machines shares one study.

Trials run in this process, or, for MaxParallelTrainingJobs > 1, in as many spawned worker
processes sharing the cores (OMP_NUM_THREADS set before MXNet loads). A first SIGINT/SIGTERM
stops every running trial at its next epoch (recorded as stopped and queued again for the
next run); trials already finished are in the storage. A trial whose process died (SIGKILL,
a second signal) is found on the next run, by the lock it held on its log, or elsewhere by
its stale heartbeat, and queued again the same way.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import inspect
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import optuna

from deepar_cli.atomic import (
    atomic_dir,
    atomic_file,
    make_output_dir,
    refuse_foreign_dir,
    refuse_overlap,
    write_json,
)
from deepar_cli.backends.mxnet.training import DEFAULT_SEED, Log
from deepar_cli.config import memory, tuning_config
from deepar_cli.config.hyperparameters import Hyperparameters, read_file, resolve
from deepar_cli.config.tuning_config import (
    FINAL_MODELS,
    ParameterRange,
    TuningConfig,
    sagemaker_values,
)
from deepar_cli.data.channels import write_records
from deepar_cli.data.holdout import drop_last
from deepar_cli.data.records import Record
from deepar_cli.errors import (
    DataError,
    DeepARCliError,
    HyperparameterError,
    Interrupted,
    UsageError,
)
from deepar_cli.model import modelfolder
from deepar_cli.threads import pool_environment

DEFAULT_STUDY_NAME = "deepar-cli-tune"
STUDY_FILE = "study.db"
# Everything tune writes into its output folder (SQLite's side files included).
OUTPUTS = frozenset({STUDY_FILE, *(f"{STUDY_FILE}-{side}" for side in ("journal", "wal", "shm")),
                     "holdout", "trials", "trials.csv", "trials.json", "objective.png",
                     "importance.png", "hyperparameters.json", "model", "tuning.json"})
# A running trial writes a heartbeat; one silent for GRACE_S (its machine died) is failed,
# and its slot in MaxNumberOfTrainingJobs is free again.
HEARTBEAT_S = 20
GRACE_S = 120
POLL_S = 1.0
# Two processes opening a new storage race to create its tables; the loser tries again.
STORAGE_ATTEMPTS = 5
# SageMaker's Auto early stopping is the median rule: Optuna's MedianPruner, once this many
# trials are complete and a trial is past its first epochs.
MEDIAN_STARTUP_TRIALS = 5
MEDIAN_WARMUP_EPOCHS = 2
# An ensemble forecasts K times slower than one model: keep it only if it scores at least
# this much (relatively) better than the best trial alone, more than seed noise. (Measured on
# the notebook's data: a mixture 0.2% better on the held-out points was 1.6% worse on test.)
ENSEMBLE_MARGIN = 0.01
# Settings a study records that earlier versions did not, with the value their studies had.
LATER_SETTINGS = {"windows": 1, "average_epochs": 0}
# The spreads calibration chooses from: 0.5, 0.55, ..., 1.5 (1: the forecasts as drawn).
SPREADS = tuple(round(0.5 + 0.05 * k, 2) for k in range(21))


class _Diverged(DeepARCliError):
    """A trial whose training loss is not a number."""


class _TrialFailed(Exception):
    """Ends a trial as FAIL (the reason is in its user attributes); the study goes on."""


class _Stopped(Exception):
    """A signal or MaxRuntimeInSeconds stops a running trial at an epoch's end."""


@dataclass(frozen=True)
class Job:
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
    average_epochs: int = 0  # training.train's: 0 keeps the lowest-loss epoch


@dataclass
class TuneResult:
    """What `tune` did: the counts, the best trial, the files written, the signal if any."""

    counts: Dict[str, int]
    best: Optional[Dict[str, Any]] = None
    stop_reason: Optional[str] = None
    signal: Optional[int] = None
    files: List[Path] = field(default_factory=list)


# --------------------------------------------------------------------------- trials


def _study_trials(study: Any) -> List[Any]:
    """The study's trials, without those a race made surplus (never run)."""
    return [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("skipped")]


def _state(trial: Any) -> str:
    """COMPLETE, PRUNED, FAILED (counts as a job), STOPPED (runs again) or RUNNING/WAITING."""
    name = trial.state.name
    if name == "FAIL":
        return "FAILED" if "fail_reason" in trial.user_attrs else "STOPPED"
    return name


def _counts(trial: Any) -> bool:
    """Whether a trial uses up one of MaxNumberOfTrainingJobs."""
    return _state(trial) in ("COMPLETE", "PRUNED", "FAILED")


def _complete(trials: Sequence[Any]) -> List[Any]:
    return [t for t in trials if _state(t) == "COMPLETE"]


def _best(trials: Sequence[Any]) -> Optional[Any]:
    complete = _complete(trials)
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


def _finite(values: Mapping[str, float]) -> Dict[str, Optional[float]]:
    return {k: (float(v) if math.isfinite(v) else None) for k, v in values.items()}


def _reason(exc: BaseException) -> str:
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
class _Objective:
    """One trial: `train` on the trial channels with the trial's hyperparameters."""

    job: Job
    stop: threading.Event
    held: Optional[int] = None  # the lock on the last trial's log: see _fail_dead

    def __call__(self, trial: Any) -> float:
        from gluonts.env import env

        from deepar_cli.backends.mxnet.training import train
        from deepar_cli.evaluation.backtest import score_channel
        from deepar_cli.tune.reporting import Reporter

        if not self._in_budget(trial):
            trial.set_user_attr("skipped", True)
            raise _TrialFailed("MaxNumberOfTrainingJobs already started")
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
                                seed=self.job.seed, average_epochs=self.job.average_epochs,
                                log=hook)
                if pooled:
                    summary["test_metrics"] = score_channel(
                        modelfolder.load(folder / "model"), self.job.test,
                        seed=self.job.seed, windows=self.job.windows)
        except optuna.TrialPruned:
            raise
        except _Stopped as stopped:
            trial.set_user_attr("stopped", str(stopped))
            trial.study.enqueue_trial(trial.params)  # the next run tries this point again
            raise _TrialFailed(str(stopped)) from None
        except Exception as exc:  # NaN loss, an impossible combination, a typed error ...
            trial.set_user_attr("fail_reason", _reason(exc))
            raise _TrialFailed(_reason(exc)) from None
        trial.set_user_attr("final_loss", summary["final_loss"])
        trial.set_user_attr("best_epoch", summary["best_epoch"])
        trial.set_user_attr("test_metrics", _finite(summary.get("test_metrics", {})))
        value = _objective_value(summary, self.job.config.objective)
        if not math.isfinite(value):
            trial.set_user_attr("fail_reason", f"{self.job.config.objective} is {value}")
            raise _TrialFailed(f"{self.job.config.objective} is {value}")
        return value

    def _in_budget(self, trial: Any) -> bool:
        """Whether fewer than MaxNumberOfTrainingJobs trials started before this one (two
        workers may ask for the last slot at once; the later trial number gives way)."""
        ahead = [t for t in _study_trials(trial.study) if t.number < trial.number
                 and (_counts(t) or t.state.name == "RUNNING")]
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


def _fail_dead(study: Any) -> None:
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
                _requeue(study, trial)
        except UpdateFinishedTrialError:  # it ended between the two looks
            pass
        finally:
            os.close(fd)


def _requeue(study: Any, trial: Any) -> None:
    """A trial whose process died runs its point again, as a stopped one does."""
    study.enqueue_trial(trial.params)


# --------------------------------------------------------------------------- the study


class _SeededPerTrial(optuna.samplers.BaseSampler):
    """The strategy's sampler, made afresh for each trial and seeded with RandomSeed plus
    the trial's number: reproducible with one worker, and no two workers (or machines)
    draw the same sequence. Without RandomSeed, one sampler seeded from the system."""

    def __init__(self, make: Callable[[Optional[int]], Any], seed: Optional[int]) -> None:
        self._make, self._seed = make, seed
        self._inner = make(seed)

    def before_trial(self, study: Any, trial: Any) -> None:
        if self._seed is not None:
            self._inner = self._make(self._seed + trial.number)
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: Any, trial: Any, param_name: str,
                           param_distribution: Any) -> Any:
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()


def _sampler(config: TuningConfig) -> Any:
    """Bayesian -> TPE, Random -> random search, Hyperband -> TPE (with the Hyperband
    pruner), Grid -> every combination once (its order fixed by RandomSeed in every process,
    as Optuna's GridSampler needs)."""
    if config.strategy == "Grid":
        space = {r.name: list(r.values) for r in config.ranges}
        return optuna.samplers.GridSampler(space, seed=config.random_seed)

    def make(seed: Optional[int]) -> Any:
        if config.strategy == "Random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed)

    return _SeededPerTrial(make, config.random_seed)


def _pruner(config: TuningConfig) -> Any:
    """Hyperband -> Optuna's HyperbandPruner over epochs; early stopping Auto -> the median
    rule; else none. Both judge the training loss each epoch reports."""
    if config.strategy == "Hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=config.min_resource or 1,
                                              max_resource=config.max_resource or "auto")
    if config.early_stopping == "Auto":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS,
                                           n_warmup_steps=MEDIAN_WARMUP_EPOCHS)
    return optuna.pruners.NopPruner()


def shown_url(url: str) -> str:
    """A storage URL without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: shown as given, opening it fails later
        return url


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """No Optuna log lines or experimental-feature warnings: tune reports trials itself."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


# What RDBStorage calls with a trial it failed for its stale heartbeat (renamed in Optuna 4.9).
_STALE_CALLBACK = ("heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in
                   inspect.signature(optuna.storages.RDBStorage).parameters else
                   "failed_trial_callback")


def _load_study(job: Job, create: bool = False) -> Any:
    from sqlalchemy.exc import IntegrityError, OperationalError

    kwargs = {"connect_args": {"timeout": 60}} if job.storage.startswith("sqlite") else {}
    error: Exception = ValueError()
    for attempt in range(STORAGE_ATTEMPTS):
        try:
            storage = optuna.storages.RDBStorage(job.storage, engine_kwargs=kwargs,
                                                 heartbeat_interval=HEARTBEAT_S,
                                                 grace_period=GRACE_S,
                                                 **{_STALE_CALLBACK: _requeue})
            if create:
                return optuna.create_study(storage=storage, study_name=job.study_name,
                                           direction="minimize", load_if_exists=True)
            return optuna.load_study(study_name=job.study_name, storage=storage,
                                     sampler=_sampler(job.config), pruner=_pruner(job.config))
        except (OperationalError, IntegrityError) as exc:  # processes creating a new
            # storage's tables at once: the loser finds them half made, and tries again
            error = exc
            if attempt + 1 < STORAGE_ATTEMPTS:
                time.sleep(0.5 * (attempt + 1))
        except Exception as exc:  # SQLAlchemy and drivers raise many kinds for a bad URL
            error = exc
            break
    cause = error.__cause__ or error  # Optuna wraps a missing driver's ImportError
    raise UsageError(f"{shown_url(job.storage)}: cannot open the study storage "
                     f"({_reason(cause)})") from None


def _stop_reason(study: Any, job: Job) -> Optional[str]:
    """Why no further trial starts now, or None while one may."""
    _fail_dead(study)
    optuna.storages.fail_stale_trials(study)
    trials = _study_trials(study)
    config = job.config
    complete = _complete(trials)
    best = _best(trials)
    if config.target_value is not None and best is not None and best.value <= config.target_value:
        return f"TargetObjectiveMetricValue {config.target_value:g} reached"
    if config.max_not_improving and best is not None and len(
            [t for t in complete if t.number > best.number]) >= config.max_not_improving:
        return (f"no improvement in {config.max_not_improving} trials "
                f"(BestObjectiveNotImproving)")
    if job.deadline is not None and time.time() >= job.deadline:
        return "MaxRuntimeInSeconds reached"
    started = [t for t in trials if _counts(t) or t.state.name == "RUNNING"]
    if len(started) >= config.trials:
        return "MaxNumberOfTrainingJobs reached"
    return None


def _work(job: Job, stop: threading.Event, after_trial: Callable[[], None] = lambda: None
          ) -> None:
    """Run trials one after another until the study needs no more (or a stop request)."""
    with _quiet_optuna():
        study = _load_study(job)
        objective = _Objective(job, stop)
        try:
            while not stop.is_set() and _stop_reason(study, job) is None:
                study.optimize(objective, n_trials=1, catch=(_TrialFailed,),
                               gc_after_trial=False)
                after_trial()
        finally:
            objective.release()


def _worker(job: Job) -> None:
    """A spawned worker: SIGTERM (sent on by the parent) stops it cleanly; SIGINT from the
    terminal is left to the parent."""
    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    _work(job, stop)


# --------------------------------------------------------------------------- running


class _Progress:
    """Reports each finished trial once, wherever it ran: a log line and a step of the bar."""

    def __init__(self, study: Any, job: Job, log: Log, bar: bool) -> None:
        from tqdm import tqdm

        self.study, self.job, self.log = study, job, log
        trials = _study_trials(study)
        self.seen = {t.number for t in trials if t.state.is_finished()}
        self.done = len([t for t in trials if _counts(t)])
        self.bar = tqdm(total=job.config.trials, initial=min(self.done, job.config.trials),
                        unit="trial", desc="tune", disable=not bar, leave=False)

    def poll(self) -> None:
        from tqdm import tqdm

        trials = _study_trials(self.study)
        best = _best(trials)
        for t in sorted(trials, key=lambda t: t.number):
            if t.number in self.seen or not t.state.is_finished():
                continue
            self.seen.add(t.number)
            self.done += _counts(t)
            with tqdm.external_write_mode():  # a stopped trial runs again: no [k/N] of its own
                self.log("trial", {**trial_row(t), "objective_metric": self.job.config.objective,
                                   "finished": self.done if _counts(t) else None,
                                   "total": self.job.config.trials,
                                   "best_trial": best.number if best else None,
                                   "best_value": best.value if best else None})
            self.bar.update(int(_counts(t)))

    def close(self) -> None:
        self.bar.close()


@contextlib.contextmanager
def _signals(on_stop: Callable[[int], None]) -> Iterator[Dict[str, int]]:
    """The first SIGINT/SIGTERM calls `on_stop` (trials end at their next epoch) and puts the
    previous handlers back (the CLI's raise `Interrupted`), so a second one stops the process
    at once."""
    caught: Dict[str, int] = {}
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handle(signum: int, frame: Any) -> None:
        caught.setdefault("signal", signum)
        for s, handler in previous.items():
            signal.signal(s, handler)
        on_stop(signum)

    for s in previous:
        signal.signal(s, handle)
    try:
        yield caught
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    """Environment variables set for the processes started inside the block."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


def _run_workers(job: Job, count: int, progress: _Progress, workers: List[Any]) -> None:
    """`count` spawned workers sharing the cores; returns when they have all ended."""
    context = multiprocessing.get_context("spawn")
    with _environ(pool_environment(count, training=True)):  # read before MXNet loads
        for _ in range(count):
            process = context.Process(target=_worker, args=(job,), daemon=False)
            process.start()
            workers.append(process)
    try:
        while any(p.is_alive() for p in workers):
            multiprocessing.connection.wait([p.sentinel for p in workers if p.is_alive()],
                                            timeout=POLL_S)
            progress.poll()
    except (KeyboardInterrupt, Interrupted):  # a second signal: do not wait for the epochs
        for process in workers:
            process.kill()
        raise
    failed = [p.exitcode for p in workers if p.exitcode not in (0, -signal.SIGTERM)]
    workers.clear()
    if failed:
        raise DeepARCliError(f"a tuning worker process failed (exit status {failed[0]}); "
                             f"its error is above")


def _run(job: Job, study: Any, progress: _Progress, log: Log) -> Optional[int]:
    """Run trials here until the study needs no more, then wait for trials running
    elsewhere. Returns the signal that stopped it, if one did."""
    stop = threading.Event()
    workers: List[Any] = []

    def on_stop(signum: int) -> None:
        stop.set()
        for process in workers:
            process.terminate()  # SIGTERM: the worker stops its trial at the next epoch

    waiting = False
    with _signals(on_stop) as caught:
        while not stop.is_set():
            if _stop_reason(study, job) is None:
                started = [t for t in _study_trials(study)
                           if _counts(t) or t.state.name == "RUNNING"]
                count = min(job.config.max_parallel, job.config.trials - len(started))
                if count == 1:
                    _work(job, stop, progress.poll)
                else:
                    _run_workers(job, count, progress, workers)
                continue
            running = [t for t in _study_trials(study) if t.state.name == "RUNNING"]
            if not running:
                break
            if not waiting:
                log("waiting", {"running": [t.number for t in running]})
                waiting = True
            stop.wait(POLL_S)
            progress.poll()
    progress.poll()
    return caught.get("signal")


# --------------------------------------------------------------------------- data


def holdout(records: Sequence[Record], prediction_length: int, windows: int = 1
            ) -> Tuple[List[Record], List[Record]]:
    """(train, test): each series without its last `windows` x `prediction_length` points,
    and whole. A series too short to hold them out trains whole and is not scored."""
    points = windows * prediction_length
    train, test = [], []
    for record in records:
        if record.target.size <= points:
            train.append(record)
            continue
        train.append(drop_last(record, points, cut_features=True))
        test.append(record)
    if not test:
        held = f"prediction_length ({prediction_length})" if windows == 1 else (
            f"{windows} x prediction_length ({points})")
        raise DataError(f"{records[0].source.rsplit(':', 1)[0]}: no series is longer than "
                        f"{held}; nothing can be held out to score the tuning objective on")
    return train, test


HeldOut = List[Tuple[Path, List[Record]]]  # channels to write once the study is claimed


def _smallest_trial(base: Hyperparameters, config: TuningConfig) -> Hyperparameters:
    """`base` (each range at its low end), with each categorical range of numbers at its
    smallest value: the trial that needs the least memory."""
    low = {r.name: min(r.values, key=float) for r in config.ranges
           if r.kind == "categorical" and all(v.isdigit() for v in r.values)}
    return resolve({**base.as_dict(), **low}) if low else base


def _channels(train: Path, test: Optional[Path], base: Hyperparameters, config: TuningConfig,
              output_dir: Path, windows: int, log: Log
              ) -> Tuple[Path, Optional[Path], str, Dict[str, Any], HeldOut]:
    """Check the data once, before any trial; returns the trial channels, how the objective
    is scored ("test", "holdout" or "train"), the train channel's shape and the held-out
    channels to write."""
    from deepar_cli.data.dataset import (
        check_likelihood_domain,
        read_with_stats,
        require_held_out,
        require_observed,
        resolve_features,
    )

    records, stats = read_with_stats(train)
    log("dataset", {"channel": "train", **stats.as_dict()})
    require_observed(stats, train)
    features = resolve_features(base, stats)
    memory.check_training(_smallest_trial(base, config), features.cardinality,
                          features.num_dynamic_feat, num_observations=stats.num_observations,
                          what="the smallest trial (each range at its low end)")
    if "likelihood" not in config.names:
        check_likelihood_domain(base, stats, train)
    shape = {"num_series": stats.num_series, "num_observations": stats.num_observations}
    if test is not None:
        test_records, test_stats = read_with_stats(test)
        log("dataset", {"channel": "test", **test_stats.as_dict()})
        require_held_out(test_records, base.prediction_length, test,
                         " to hold out its last points")
        return train, test, "test", shape, []
    if config.objective == "train:final_loss":
        return train, None, "train", shape, []
    held_train, held_test = holdout(records, base.prediction_length, windows)
    folder = output_dir / "holdout"
    return (folder / "train.json", folder / "test.json", "holdout", shape,
            [(folder / "train.json", held_train), (folder / "test.json", held_test)])


# --------------------------------------------------------------------------- outputs


def trial_row(trial: Any) -> Dict[str, Any]:
    """One finished trial as the trials table shows it."""
    attrs = trial.user_attrs
    seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() if (
        trial.datetime_complete and trial.datetime_start) else None
    reason = attrs.get("fail_reason") or attrs.get("stopped") or (
        f"pruned at epoch {attrs['pruned_at_epoch']}" if "pruned_at_epoch" in attrs else
        "its process died" if _state(trial) == "STOPPED" else None)
    return {"number": trial.number, "state": _state(trial), "objective": trial.value,
            "seconds": None if seconds is None else round(seconds, 1),
            "hyperparameters": attrs.get("hyperparameters", {}),
            "final_loss": attrs.get("final_loss"), "test_metrics": attrs.get("test_metrics", {}),
            "reason": reason}


def _write_table(rows: List[Dict[str, Any]], config: TuningConfig, output_dir: Path
                 ) -> List[Path]:
    write_json(output_dir / "trials.json", {"objective": config.objective, "trials": rows})
    metrics: List[str] = []
    for row in rows:
        metrics += [k for k in row["test_metrics"] if k not in metrics]
    header = ["number", "state", "objective", "seconds", *config.names, "final_loss",
              *metrics, "reason"]
    with atomic_file(output_dir / "trials.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow([row["number"], row["state"], row["objective"], row["seconds"],
                             *(row["hyperparameters"].get(n) for n in config.names),
                             row["final_loss"], *(row["test_metrics"].get(m) for m in metrics),
                             row["reason"]])
    return [output_dir / "trials.csv", output_dir / "trials.json"]


def _figure() -> Tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _plot_objective(rows: List[Dict[str, Any]], metric: str, path: Path) -> None:
    """The objective of each complete trial, and the best so far."""
    from matplotlib.ticker import MaxNLocator

    from deepar_cli.evaluation.plotting import save_png

    fig, ax = _figure()
    done = [r for r in rows if r["state"] == "COMPLETE"]
    numbers = [r["number"] for r in done]
    values = [r["objective"] for r in done]
    ax.plot(numbers, values, "o", color="tab:blue", label="trial")
    ax.step(numbers, [min(values[: i + 1]) for i in range(len(values))], where="post",
            color="tab:orange", label="best so far")
    if values and min(values) > 0 and max(values) / min(values) > 20:
        ax.set_yscale("log")
    states = {s: sum(r["state"] == s for r in rows) for s in ("PRUNED", "FAILED")}
    ax.set_title(f"{metric} per trial ({len(done)} complete, {states['PRUNED']} pruned, "
                 f"{states['FAILED']} failed)")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(metric)
    ax.legend()
    save_png(fig, path)


def _plot_importance(study: Any, path: Path) -> None:
    """Which hyperparameters mattered: Optuna's PED-ANOVA importance over complete trials."""
    from deepar_cli.evaluation.plotting import save_png

    fig, ax = _figure()
    complete = len(_complete(_study_trials(study)))
    importance = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()) if complete >= 2 else {}
    if importance:
        names = list(importance)[::-1]  # "1-dropout_rate" is dropout_rate on a reverse log scale
        ax.barh([n.removeprefix("1-") for n in names], [importance[n] for n in names],
                color="tab:blue")
        ax.set_xlabel("importance (PED-ANOVA; sums to 1)")
    else:
        ax.text(0.5, 0.5, "ranking hyperparameters needs 2 complete trials", ha="center",
                va="center")
        ax.set_axis_off()
    ax.set_title(f"which hyperparameters mattered ({complete} complete trials)")
    save_png(fig, path)


def _final_model(trials: Sequence[Any], job: Job, source: Dict[str, Any], output_dir: Path,
                 log: Log) -> None:
    """DIR/model as `source["how"]` says: "refit", each chosen trial's hyperparameters
    trained on the whole train channel, `source["bag"]` seeds of each; "copy" or "retrain",
    the trials' own models (copied, or trained again here when on another machine, and for
    the bag's other seeds); "trials+refit", the trials' own models and the best one's
    hyperparameters trained on the whole channel with the bag's seeds. Then the spread."""
    target = output_dir / "model"
    log("model", {**source, "path": str(target)})
    seeds = [job.seed + k for k in range(source["bag"])]
    refit_on = Path(source["train"]) if source["how"] in ("refit", "trials+refit") else None
    plan = ([(trial, job.seed, None) for trial in trials]
            + [(trials[0], seed, refit_on) for seed in seeds]
            if source["how"] == "trials+refit" else
            [(trial, seed, refit_on) for trial in trials for seed in seeds])
    with atomic_dir(target) as folder:
        if len(plan) == 1:
            _member(*plan[0], job, folder, log)
        else:
            for count, member in enumerate(plan):
                _member(*member, job, folder / "members" / str(count), log)
            weights = [w for w in source["weights"] for _ in seeds] if (
                "weights" in source) else None
            modelfolder.write_ensemble(folder, len(plan), {"ensemble": source}, weights)
        if source["spread"] != 1.0:
            modelfolder.write_spread(folder, source["spread"])


def _member(trial: Any, seed: int, refit_on: Optional[Path], job: Job, target: Path,
            log: Log) -> None:
    """At `target`: the trial's hyperparameters trained with `seed` on the whole train
    channel `refit_on`; without one, the trial's own model (copied when it is on this
    machine and `seed` is the trial's, else trained again on the trials' data)."""
    from deepar_cli.backends.mxnet.training import train

    if refit_on is None and seed == job.seed and _model_here(trial):
        shutil.copytree(trial.user_attrs["model_dir"], target, dirs_exist_ok=True)
        return
    hp = resolve({**job.static, **trial.user_attrs["hyperparameters"]})
    train(refit_on or job.train, hp, target, test_channel=None if refit_on else job.test,
          seed=seed, average_epochs=job.average_epochs, log=log)


def _model_source(trials: Sequence[Any], job: Job, evaluation: str, train_channel: Path,
                  final_model: str) -> Dict[str, Any]:
    numbers = {"trial": trials[0].number} if len(trials) == 1 else {
        "trials": [t.number for t in trials]}
    if evaluation == "holdout" and final_model in ("refit", "trials+refit"):
        return {**numbers, "how": final_model, "train": str(train_channel)}
    here = all(_model_here(t) for t in trials)
    return {**numbers, "how": "copy" if here else "retrain", "train": str(job.train),
            "holdout": evaluation == "holdout"}


def _calibrate(trials: Sequence[Any], job: Job, log: Log) -> float:
    """The spread of SPREADS whose forecasts by `trials`' models (the final model's, before
    any refit) score the best mean_wQuantileLoss on the objective's test points; 1 when
    there are none, or the models are on another machine."""
    from deepar_cli.evaluation.backtest import spread_scores

    reason = ("the objective scores no test points" if job.test is None else
              None if all(_model_here(t) for t in trials) else
              "the chosen trials' models are on another machine")
    if reason:
        log("calibration", {"spread": 1.0, "reason": reason})
        return 1.0
    folder = Path(trials[0].user_attrs["model_dir"]) if len(trials) == 1 else (
        job.trials_dir / "ensemble")
    scores = spread_scores(modelfolder.load(folder), job.test, SPREADS, seed=job.seed,
                           windows=job.windows)
    spread = min(SPREADS, key=lambda s: (scores[s]["mean_wQuantileLoss"], abs(s - 1)))
    log("calibration", {"spread": spread, "before": _finite(scores[1.0]),
                        "after": _finite(scores[spread])})
    return spread


def _model_here(trial: Any) -> bool:
    return trial.user_attrs.get("host") == socket.gethostname() and Path(
        trial.user_attrs["model_dir"]).is_dir()


def _ensemble(study: Any, job: Job, size: int, log: Log) -> List[Any]:
    """The `size` best complete trials with distinct hyperparameters whose models are on
    this machine, best first, when the mixture of their forecasts scores better on the
    objective than the best alone by ENSEMBLE_MARGIN; else the best alone."""
    from deepar_cli.evaluation.backtest import score_channel

    complete = sorted(_complete(_study_trials(study)), key=lambda t: (t.value, t.number))
    best = complete[0]
    if size < 2:
        return [best]
    members: List[Any] = []
    for trial in complete:
        values = trial.user_attrs["hyperparameters"]
        if len(members) < size and _model_here(trial) and all(
                m.user_attrs["hyperparameters"] != values for m in members):
            members.append(trial)
    if len(members) < 2 or members[0] is not best:
        log("ensemble", {"size": size, "kept": False, "reason": "fewer than 2 of the best "
                         "trials, with distinct hyperparameters, have their models on this "
                         "machine"})
        return [best]
    metric = job.config.objective.split(":", 1)[1]
    metrics = score_channel(modelfolder.load(_trials_ensemble(members, job)), job.test,
                            seed=job.seed, windows=job.windows)
    value = metrics[metric]
    kept = value < best.value * (1 - ENSEMBLE_MARGIN)
    log("ensemble", {"size": len(members), "trials": [t.number for t in members],
                     "objective": job.config.objective, "value": value,
                     "best_value": best.value, "kept": kept,
                     "test_metrics": _finite(metrics)})
    return members if kept else [best]


def _trials_ensemble(members: Sequence[Any], job: Job,
                     weights: Optional[Sequence[int]] = None) -> Path:
    """The trials' models (on this machine) as one ensemble folder in the trials' folder."""
    folder = job.trials_dir / "ensemble"
    with atomic_dir(folder) as tmp:
        for k, trial in enumerate(members):
            shutil.copytree(trial.user_attrs["model_dir"], tmp / "members" / str(k))
        modelfolder.write_ensemble(tmp, len(members), {
            "ensemble": {"trials": [t.number for t in members]}}, weights)
    return folder


def _selection(study: Any, job: Job, log: Log) -> Tuple[List[Any], Optional[List[int]]]:
    """Caruana's ensemble selection (`selection.select`) over the complete trials' models on
    this machine, scored on the objective's test points: the trials chosen, most weight
    first, and their weights; the best trial alone where there are no such points or
    models, and where it alone scores best."""
    from deepar_cli.evaluation.backtest import held_out_paths, score_channel
    from deepar_cli.tune import selection

    complete = sorted(_complete(_study_trials(study)), key=lambda t: (t.value, t.number))
    here = [t for t in complete if _model_here(t)]
    reason = ("the objective scores no test points" if job.test is None else
              None if here else "no trial's model is on this machine")
    if reason:
        log("selection", {"reason": reason})
        return complete[:1], None
    forecasts, truth, quantiles = [], None, ()
    for trial in here:
        model = modelfolder.load(Path(trial.user_attrs["model_dir"]))
        paths, truth = held_out_paths(model, job.test, seed=job.seed, windows=job.windows)
        forecasts.append(paths)
        quantiles = model.hp.test_quantiles
    metric = job.config.objective.split(":", 1)[1]
    counts = selection.select(forecasts, truth, metric, quantiles)
    chosen = sorted((k for k, count in enumerate(counts) if count), key=lambda k: -counts[k])
    members, weights = [here[k] for k in chosen], [counts[k] for k in chosen]
    figures: Dict[str, Any] = {"candidates": len(here), "trials": [t.number for t in members],
                               "weights": weights, "objective": job.config.objective,
                               "best_value": complete[0].value}
    if len(members) == 1:
        log("selection", {**figures, "value": members[0].value})
        return members, None
    metrics = score_channel(modelfolder.load(_trials_ensemble(members, job, weights)),
                            job.test, seed=job.seed, windows=job.windows)
    log("selection", {**figures, "value": metrics[metric], "test_metrics": _finite(metrics)})
    return members, weights


@dataclass(frozen=True)
class _Final:
    """How the final model is made (tune's options)."""

    model: str  # one of FINAL_MODELS
    ensemble: int
    bag: int
    calibrate: bool


def _finish(study: Any, job: Job, output_dir: Path, evaluation: str, train_channel: Path,
            final: _Final, result: TuneResult, log: Log) -> None:
    """Best hyperparameters, summary and model, once the study is done."""
    best = _best(_study_trials(study))
    if best is None:
        failed = [t for t in _study_trials(study) if _state(t) == "FAILED"]
        first = f"; trial {failed[0].number}: {failed[0].user_attrs['fail_reason']}" if (
            failed) else ""
        raise HyperparameterError(f"no trial completed ({_count_text(result.counts)}){first}")
    tuned = best.user_attrs["hyperparameters"]
    result.best = {"trial": best.number, "value": best.value, "hyperparameters": tuned}
    log("best", {**result.best, "objective": job.config.objective, "counts": result.counts,
                 "stop_reason": result.stop_reason})
    hp_path = output_dir / "hyperparameters.json"
    write_json(hp_path, sagemaker_values({**job.static, **tuned}))
    members, weights = (_selection(study, job, log) if final.model == "selection" else
                        (_ensemble(study, job, final.ensemble, log), None))
    spread = _calibrate(members, job, log) if final.calibrate else 1.0
    source = {**_model_source(members, job, evaluation, train_channel, final.model),
              **({"weights": weights} if weights else {}), "bag": final.bag, "spread": spread}
    summary_path = output_dir / "tuning.json"
    if _previous_model(summary_path) == source and (output_dir / "model").is_dir():
        log("model", {**source, "how": "unchanged", "path": str(output_dir / "model")})
    else:
        _final_model(members, job, source, output_dir, log)
    write_json(summary_path, {
        "study_name": job.study_name, "storage": shown_url(job.storage),
        "strategy": job.config.strategy, "objective": job.config.objective,
        "evaluation": evaluation, "counts": result.counts, "stop_reason": result.stop_reason,
        "best_trial": best.number, "best_value": best.value, "hyperparameters": tuned,
        "average_epochs": job.average_epochs, "model": source})
    result.files += [hp_path, output_dir / "model", summary_path]


def _previous_model(summary_path: Path) -> Any:
    """Where the model of an earlier run of this tune came from (to skip training it again)."""
    try:
        return json.loads(summary_path.read_text()).get("model")
    except (OSError, ValueError, AttributeError):
        return None


def _count_text(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {state}" for state, n in counts.items() if n) or "no trial"


def _counted(study: Any) -> Dict[str, int]:
    states = [_state(t) for t in _study_trials(study)]
    return {s.lower(): states.count(s) for s in ("COMPLETE", "PRUNED", "FAILED", "STOPPED")}


# --------------------------------------------------------------------------- the command


def tune(train_channel: Path, hp_file: Path, output_dir: Path, *,
         test_channel: Optional[Path] = None, config_file: Optional[Path] = None,
         strategy: Optional[str] = None, objective: Optional[str] = None,
         max_trials: Optional[int] = None, max_parallel: Optional[int] = None,
         storage: Optional[str] = None, study_name: str = DEFAULT_STUDY_NAME,
         final_model: str = FINAL_MODELS[0], ensemble: int = 1, holdout_windows: int = 1,
         bag: int = 1, calibrate: bool = True, average_epochs: int = 0, seed: int = DEFAULT_SEED,
         log: Log = lambda event, figures: None, progress: bool = False) -> TuneResult:
    """`deepar-cli tune`: run (or resume, or join) a study, then write its outputs into
    `output_dir`: trials.csv/json, objective.png, importance.png, and once the study is
    done hyperparameters.json, model/ and tuning.json.

    `final_model` (one of FINAL_MODELS), after a held-out objective: "trials+refit" keeps
    the chosen trials' own models and adds the best one's hyperparameters trained on the
    whole train channel, "refit" keeps only that training (one per chosen trial), "trials"
    only the trials' models, "selection" the trials' models that Caruana's ensemble
    selection (`selection.select`) weighs on the objective's test points (with a test
    channel too); with a test channel the others keep the trials' models.

    `ensemble` K > 1: the model mixes the K best trials' forecasts if that scores better on
    the objective than the best trial alone (`forecasting.Ensemble`). Without a test channel,
    `holdout_windows` W: trials train on each series less its last W x prediction_length
    points and are scored on those W rolling windows, pooled. `bag` N > 1: the model's
    hyperparameters are trained N times, with seeds seed ... seed + N - 1, and their
    quantiles averaged. `calibrate`: the model's spread about its median is scaled by the
    factor of SPREADS whose forecasts, by the chosen trials' models, score the best
    mean_wQuantileLoss on the objective's test points. `average_epochs`: as `train`'s, for
    every trial and the final model."""
    static = read_file(hp_file)
    config = tuning_config.load(config_file, static, str(hp_file), strategy=strategy,
                                objective=objective, max_trials=max_trials,
                                max_parallel=max_parallel)
    base = tuning_config.resolve_static(config, static, str(hp_file))
    if final_model not in FINAL_MODELS:
        raise UsageError(f"final_model must be one of {', '.join(FINAL_MODELS)}, got "
                         f"{final_model!r}")
    _check_ensemble(ensemble, config, final_model)
    if bag < 1:
        raise UsageError(f"bag must be at least 1, got {bag}")
    if holdout_windows < 1 or (holdout_windows > 1 and test_channel is not None):
        raise UsageError(f"holdout_windows must be at least 1, and 1 with a test channel "
                         f"(the objective is then the test channel's), got {holdout_windows}")
    refuse_overlap(output_dir, [train_channel, test_channel, hp_file, config_file],
                   "--output-dir", replaced=True)
    refuse_foreign_dir(output_dir, OUTPUTS, "tune folder")
    trial_train, trial_test, evaluation, shape, held_out = _channels(
        train_channel, test_channel, base, config, output_dir, holdout_windows, log)
    windows = holdout_windows if evaluation == "holdout" else 1
    make_output_dir(output_dir)
    job = Job(storage=storage or f"sqlite:///{(output_dir / STUDY_FILE).resolve()}",
              study_name=study_name, config=config, static=dict(static), train=trial_train,
              test=trial_test, trials_dir=(output_dir / "trials").resolve(), seed=seed,
              deadline=time.time() + config.max_runtime if config.max_runtime else None,
              windows=windows, average_epochs=average_epochs)
    with _quiet_optuna():
        study = _load_study(job, create=True)
        _claim(study, job, {"static": job.static, "objective": config.objective,
                            "ranges": [r.as_json() for r in config.ranges],
                            "evaluation": evaluation, "windows": windows, "seed": seed,
                            "average_epochs": average_epochs, "train": shape})
        for path, records in held_out:  # not before: a refused run leaves the study's as is
            write_records(path, records)
        progress_ = _Progress(study, job, log, progress)
        log("tune", {"ranges": [r.describe() for r in config.ranges],
                     "strategy": config.strategy, "early_stopping": config.early_stopping,
                     "objective": config.objective, "trials": config.trials,
                     "parallel": config.max_parallel, "evaluation": evaluation,
                     "train": str(trial_train), "test": str(trial_test),
                     "prediction_length": base.prediction_length, "windows": windows,
                     "study": study_name,
                     "storage": shown_url(job.storage), "finished": progress_.done})
        try:
            caught = _run(job, study, progress_, log)
        finally:
            progress_.close()
        result = TuneResult(_counted(study), signal=caught,
                            stop_reason=None if caught else _stop_reason(study, job))
        rows = [trial_row(t) for t in _study_trials(study) if t.state.is_finished()]
        result.files += _write_table(rows, config, output_dir)
        _plot_objective(rows, config.objective, output_dir / "objective.png")
        _plot_importance(study, output_dir / "importance.png")
        result.files += [output_dir / "objective.png", output_dir / "importance.png"]
        if caught is None:
            _finish(study, job, output_dir, evaluation, train_channel,
                    _Final(final_model, ensemble, bag, calibrate), result, log)
    return result


def _check_ensemble(size: int, config: TuningConfig, final_model: str) -> None:
    if size > 1 and final_model == "selection":
        raise UsageError("ensemble selection (the default final model) chooses and weighs "
                         "its own members; to mix the K best trials instead, choose the final "
                         "model trials+refit, refit or trials")
    if size < 1 or size > config.trials:
        raise UsageError(f"ensemble must be in [1, MaxNumberOfTrainingJobs = {config.trials}], "
                         f"got {size}")
    if size > 1 and config.objective == "train:final_loss":
        raise UsageError("an ensemble is kept only if it scores better on a test objective; "
                         "train:final_loss scores single models (use test:RMSE or "
                         "test:mean_wQuantileLoss)")


def _claim(study: Any, job: Job, settings: Dict[str, Any]) -> None:
    """A study belongs to one tuning set-up: resuming or joining it with other static
    hyperparameters, ranges, objective, scoring, seed, epoch averaging or data is refused."""
    settings = json.loads(json.dumps(settings, default=str))
    saved = study.user_attrs.get("deepar_cli")
    if saved is None:
        study.set_user_attr("deepar_cli", settings)
        return
    differs = [key for key in settings
               if saved.get(key, LATER_SETTINGS.get(key)) != settings[key]]
    if differs:
        raise UsageError(
            f'{shown_url(job.storage)}: study "{job.study_name}" was started with other '
            f"settings ({', '.join(differs)} {'differs' if len(differs) == 1 else 'differ'}); use "
            f"another study name or output folder")


def _values_text(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in values.items())


def describe_event(event: str, figures: Dict[str, Any]) -> Optional[str]:
    """tune's events as log lines (reporting.format_event hands them here)."""
    if event == "tune":
        lines = [f"tuning {len(figures['ranges'])} hyperparameters with {figures['strategy']} "
                 f"over {figures['trials']} trials, {figures['parallel']} at a time "
                 f"(early stopping {figures['early_stopping']}):"]
        lines += [f"  {line}" for line in figures["ranges"]]
        where = {
            "test": f"on {figures['test']}",
            "holdout": f"on the last {_held_out_text(figures)} of each training series, "
                       f"held out in {figures['test']} (trials train on {figures['train']})",
            "train": "on the training loss",
        }[figures["evaluation"]]
        lines.append(f"objective: {figures['objective']} (minimized), scored {where}")
        lines.append(f"study \"{figures['study']}\" in {figures['storage']}: "
                     f"{figures['finished']} of {figures['trials']} trials finished before")
        return "\n".join(lines)
    if event == "trial":
        values = _values_text(figures["hyperparameters"])
        outcome = (f"{figures['objective_metric']} {figures['objective']:.6g}"
                   if figures["state"] == "COMPLETE" else
                   f"{figures['state']}: {figures['reason']}")
        best = ("no complete trial yet" if figures["best_trial"] is None else
                f"best {figures['best_value']:.6g} (trial {figures['best_trial']})")
        label = "" if figures["finished"] is None else (
            f" [{figures['finished']}/{figures['total']}]")
        return (f"trial {figures['number']}{label} {values} -> {outcome} in "
                f"{figures['seconds']} s; {best}")
    if event == "waiting":
        return f"waiting for trials running elsewhere: {figures['running']}"
    if event == "best":
        return (f"best: trial {figures['trial']}, {figures['objective']} "
                f"{figures['value']:.6g}: {_values_text(figures['hyperparameters'])} "
                f"({_count_text(figures['counts'])}; {figures['stop_reason']})")
    if event == "ensemble":
        if "reason" in figures:
            return f"ensemble of {figures['size']}: not made ({figures['reason']})"
        verdict = "kept" if figures["kept"] else (
            f"not kept: not {ENSEMBLE_MARGIN:.0%} better than the best trial alone")
        return (f"ensemble of trials {', '.join(map(str, figures['trials']))}: "
                f"{figures['objective']} {figures['value']:.6g} against the best trial's "
                f"{figures['best_value']:.6g}; {verdict}")
    if event == "selection":
        return _selection_text(figures)
    if event == "calibration":
        if "reason" in figures:
            return f"calibration: spread 1 ({figures['reason']})"
        before, after = figures["before"], figures["after"]
        return (f"calibration: spread {figures['spread']:g} on the objective's test points: "
                f"mean_wQuantileLoss {before['mean_wQuantileLoss']:.6g} -> "
                f"{after['mean_wQuantileLoss']:.6g}, Coverage[0.1/0.5/0.9] "
                f"{_coverage_text(before)} -> {_coverage_text(after)}")
    if event == "model":
        return f"model: {figures['path']} <- {_model_text(figures)}{_final_text(figures)}"
    return None


def _selection_text(figures: Dict[str, Any]) -> str:
    if "reason" in figures:
        return f"ensemble selection: the best trial alone ({figures['reason']})"
    chosen = ", ".join(f"{trial} x{weight}" for trial, weight in
                       zip(figures["trials"], figures["weights"]))
    return (f"ensemble selection over {figures['candidates']} trials' models: {chosen}: "
            f"{figures['objective']} {figures['value']:.6g} against the best trial's "
            f"{figures['best_value']:.6g}")


def _held_out_text(figures: Dict[str, Any]) -> str:
    windows, points = figures["windows"], figures["prediction_length"]
    if windows == 1:
        return f"{points} points"
    return f"{windows} x {points} points ({windows} rolling windows, pooled)"


def _coverage_text(figures: Mapping[str, Any]) -> str:
    return "/".join(f"{figures[k]:.2f}" if figures.get(k) is not None else "-"
                    for k in ("Coverage[0.1]", "Coverage[0.5]", "Coverage[0.9]"))


def _final_text(figures: Dict[str, Any]) -> str:
    bag = figures["bag"]
    seeds = f"{bag} seeds of the refit" if figures["how"] == "trials+refit" else f"{bag} seeds each"
    parts = ([f"{seeds}, quantiles averaged"] if bag > 1 else []) + (
        [f"spread x {figures['spread']:g}"] if figures["spread"] != 1.0 else [])
    return f"; {', '.join(parts)}" if parts else ""


def _weights_text(figures: Dict[str, Any]) -> str:
    weights = figures.get("weights")
    return f", weighted {':'.join(map(str, weights))}" if weights else ""


def _model_text(figures: Dict[str, Any]) -> str:
    if "trials" in figures:
        members = f"trials {', '.join(map(str, figures['trials']))}"
        return {
            "refit": f"an ensemble of the hyperparameters of {members}, each trained on the "
                     f"whole train channel {figures['train']}",
            "copy": f"an ensemble of the models of {members}{_weights_text(figures)} "
                    f"(trained on {figures['train']}"
                    + ("; no refit)" if figures.get("holdout") else ")"),
            "trials+refit": f"the models of {members} (trained without the held-out points) "
                            f"and trial {figures['trials'][0]}'s hyperparameters trained on "
                            f"the whole train channel {figures['train']}, quantiles averaged",
            "unchanged": f"the ensemble of {members}, already there",
        }[figures["how"]]
    return {
        "refit": f"the best hyperparameters (trial {figures['trial']}) trained on the whole "
                 f"train channel {figures['train']}",
        "copy": f"trial {figures['trial']}'s model (trained on {figures['train']}"
                + ("; no refit)" if figures.get("holdout") else ")"),
        "retrain": f"trial {figures['trial']}'s hyperparameters trained again here (its "
                   f"model is on another machine)",
        "trials+refit": f"trial {figures['trial']}'s model (trained without the held-out "
                        f"points) and its hyperparameters trained on the whole train channel "
                        f"{figures['train']}, quantiles averaged",
        "unchanged": f"trial {figures['trial']}'s model, already there",
    }[figures["how"]]
