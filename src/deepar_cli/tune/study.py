"""`deepar-cli tune`: SageMaker's automatic model tuning for DeepAR, on Optuna.

A study of trials (`trials`), each one `train` run with the static hyperparameters plus a
point of the ranges, scored on the objective SageMaker's DeepAR emits
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
import inspect
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional

import optuna

from deepar_cli.atomic import make_output_dir, refuse_foreign_dir, refuse_overlap
from deepar_cli.config import tuning_config
from deepar_cli.config.hyperparameters import read_file
from deepar_cli.config.tuning_config import FINAL_MODELS, TuningConfig
from deepar_cli.data.channels import write_records
from deepar_cli.errors import DeepARCliError, Interrupted, UsageError
from deepar_cli.threads import pool_environment
from deepar_cli.training import DEFAULT_SEED, Log
from deepar_cli.tune.channels import trial_channels
from deepar_cli.tune.final_model import finish
from deepar_cli.tune.outputs import plot_importance, plot_objective, trial_row, write_table
from deepar_cli.tune.trials import (
    Objective,
    TrialFailed,
    TuneResult,
    TuningJob,
    best_trial,
    completed,
    counts_as_job,
    fail_dead,
    failure_reason,
    requeue,
    shown_url,
    state_of,
    study_trials,
)

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


def _load_study(job: TuningJob, create: bool = False) -> Any:
    from sqlalchemy.exc import IntegrityError, OperationalError

    kwargs = {"connect_args": {"timeout": 60}} if job.storage.startswith("sqlite") else {}
    error: Exception = ValueError()
    for attempt in range(STORAGE_ATTEMPTS):
        try:
            storage = optuna.storages.RDBStorage(job.storage, engine_kwargs=kwargs,
                                                 heartbeat_interval=HEARTBEAT_S,
                                                 grace_period=GRACE_S,
                                                 **{_STALE_CALLBACK: requeue})
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
                     f"({failure_reason(cause)})") from None


def _stop_reason(study: Any, job: TuningJob) -> Optional[str]:
    """Why no further trial starts now, or None while one may."""
    fail_dead(study)
    optuna.storages.fail_stale_trials(study)
    trials = study_trials(study)
    config = job.config
    complete = completed(trials)
    best = best_trial(trials)
    if config.target_value is not None and best is not None and best.value <= config.target_value:
        return f"TargetObjectiveMetricValue {config.target_value:g} reached"
    if config.max_not_improving and best is not None and len(
            [t for t in complete if t.number > best.number]) >= config.max_not_improving:
        return (f"no improvement in {config.max_not_improving} trials "
                f"(BestObjectiveNotImproving)")
    if job.deadline is not None and time.time() >= job.deadline:
        return "MaxRuntimeInSeconds reached"
    started = [t for t in trials if counts_as_job(t) or t.state.name == "RUNNING"]
    if len(started) >= config.trials:
        return "MaxNumberOfTrainingJobs reached"
    return None


def _work(job: TuningJob, stop: threading.Event, after_trial: Callable[[], None] = lambda: None
          ) -> None:
    """Run trials one after another until the study needs no more (or a stop request)."""
    with _quiet_optuna():
        study = _load_study(job)
        objective = Objective(job, stop)
        try:
            while not stop.is_set() and _stop_reason(study, job) is None:
                study.optimize(objective, n_trials=1, catch=(TrialFailed,),
                               gc_after_trial=False)
                after_trial()
        finally:
            objective.release()


def _worker(job: TuningJob) -> None:
    """A spawned worker: SIGTERM (sent on by the parent) stops it cleanly; SIGINT from the
    terminal is left to the parent."""
    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    _work(job, stop)


# --------------------------------------------------------------------------- running


class _Progress:
    """Reports each finished trial once, wherever it ran: a log line and a step of the bar."""

    def __init__(self, study: Any, job: TuningJob, log: Log, bar: bool) -> None:
        from tqdm import tqdm

        self.study, self.job, self.log = study, job, log
        trials = study_trials(study)
        self.seen = {t.number for t in trials if t.state.is_finished()}
        self.done = len([t for t in trials if counts_as_job(t)])
        self.bar = tqdm(total=job.config.trials, initial=min(self.done, job.config.trials),
                        unit="trial", desc="tune", disable=not bar, leave=False)

    def poll(self) -> None:
        from tqdm import tqdm

        trials = study_trials(self.study)
        best = best_trial(trials)
        for t in sorted(trials, key=lambda t: t.number):
            if t.number in self.seen or not t.state.is_finished():
                continue
            self.seen.add(t.number)
            self.done += counts_as_job(t)
            with tqdm.external_write_mode():  # a stopped trial runs again: no [k/N] of its own
                self.log("trial", {**trial_row(t), "objective_metric": self.job.config.objective,
                                   "finished": self.done if counts_as_job(t) else None,
                                   "total": self.job.config.trials,
                                   "best_trial": best.number if best else None,
                                   "best_value": best.value if best else None})
            self.bar.update(int(counts_as_job(t)))

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


def _run_workers(job: TuningJob, count: int, progress: _Progress, workers: List[Any]) -> None:
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


def _run(job: TuningJob, study: Any, progress: _Progress, log: Log) -> Optional[int]:
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
                started = [t for t in study_trials(study)
                           if counts_as_job(t) or t.state.name == "RUNNING"]
                count = min(job.config.max_parallel, job.config.trials - len(started))
                if count == 1:
                    _work(job, stop, progress.poll)
                else:
                    _run_workers(job, count, progress, workers)
                continue
            running = [t for t in study_trials(study) if t.state.name == "RUNNING"]
            if not running:
                break
            if not waiting:
                log("waiting", {"running": [t.number for t in running]})
                waiting = True
            stop.wait(POLL_S)
            progress.poll()
    progress.poll()
    return caught.get("signal")

def _counted(study: Any) -> Dict[str, int]:
    states = [state_of(t) for t in study_trials(study)]
    return {s.lower(): states.count(s) for s in ("COMPLETE", "PRUNED", "FAILED", "STOPPED")}



# --------------------------------------------------------------------------- the command


def tune(train_channel: Path, hp_file: Path, output_dir: Path, *,
         test_channel: Optional[Path] = None, config_file: Optional[Path] = None,
         strategy: Optional[str] = None, objective: Optional[str] = None,
         max_trials: Optional[int] = None, max_parallel: Optional[int] = None,
         storage: Optional[str] = None, study_name: str = DEFAULT_STUDY_NAME,
         final_model: str = FINAL_MODELS[0], holdout_windows: int = 1,
         seed: int = DEFAULT_SEED, log: Log = lambda event, figures: None,
         progress: bool = False) -> TuneResult:
    """`deepar-cli tune`: run (or resume, or join) a study, then write its outputs into
    `output_dir`: trials.csv/json, objective.png, importance.png, and once the study is
    done hyperparameters.json, model/ and tuning.json (`final_model.finish`).

    `final_model` (one of FINAL_MODELS): "selection", the trials' models that Caruana's
    ensemble selection weighs on the objective's test points; "refit", SageMaker's rule, the
    best trial's model, or after a held-out objective its hyperparameters trained on the
    whole train channel. Without a test channel, `holdout_windows` W: trials train on each
    series less its last W x prediction_length points and are scored on those W rolling
    windows, pooled."""
    static = read_file(hp_file)
    config = tuning_config.load(config_file, static, str(hp_file), strategy=strategy,
                                objective=objective, max_trials=max_trials,
                                max_parallel=max_parallel)
    base = tuning_config.resolve_static(config, static, str(hp_file))
    if final_model not in FINAL_MODELS:
        raise UsageError(f"final_model must be one of {', '.join(FINAL_MODELS)}, got "
                         f"{final_model!r}")
    if holdout_windows < 1 or (holdout_windows > 1 and test_channel is not None):
        raise UsageError(f"holdout_windows must be at least 1, and 1 with a test channel "
                         f"(the objective is then the test channel's), got {holdout_windows}")
    refuse_overlap(output_dir, [train_channel, test_channel, hp_file, config_file],
                   "--output-dir", replaced=True)
    refuse_foreign_dir(output_dir, OUTPUTS, "tune folder")
    trial_train, trial_test, evaluation, shape, held_out = trial_channels(
        train_channel, test_channel, base, config, output_dir, holdout_windows, log)
    windows = holdout_windows if evaluation == "holdout" else 1
    make_output_dir(output_dir)
    job = TuningJob(storage=storage or f"sqlite:///{(output_dir / STUDY_FILE).resolve()}",
                    study_name=study_name, config=config, static=dict(static),
                    train=trial_train, test=trial_test,
                    trials_dir=(output_dir / "trials").resolve(), seed=seed,
                    deadline=time.time() + config.max_runtime if config.max_runtime else None,
                    windows=windows)
    with _quiet_optuna():
        study = _load_study(job, create=True)
        _claim(study, job, {"static": job.static, "objective": config.objective,
                            "ranges": [r.as_json() for r in config.ranges],
                            "evaluation": evaluation, "windows": windows, "seed": seed,
                            "train": shape})
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
        rows = [trial_row(t) for t in study_trials(study) if t.state.is_finished()]
        result.files += write_table(rows, config, output_dir)
        plot_objective(rows, config.objective, output_dir / "objective.png")
        plot_importance(study, output_dir / "importance.png")
        result.files += [output_dir / "objective.png", output_dir / "importance.png"]
        if caught is None:
            finish(study, job, output_dir, evaluation, train_channel, final_model, result,
                   log)
    return result


def _claim(study: Any, job: TuningJob, settings: Dict[str, Any]) -> None:
    """A study belongs to one tuning set-up: resuming or joining it with other static
    hyperparameters, ranges, objective, scoring, seed or data is refused."""
    settings = json.loads(json.dumps(settings, default=str))
    saved = study.user_attrs.get("deepar_cli")
    if saved is None:
        study.set_user_attr("deepar_cli", settings)
        return
    differs = [key for key in settings if saved.get(key) != settings[key]]
    if differs:
        raise UsageError(
            f'{shown_url(job.storage)}: study "{job.study_name}" was started with other '
            f"settings ({', '.join(differs)} {'differs' if len(differs) == 1 else 'differ'}); use "
            f"another study name or output folder")
