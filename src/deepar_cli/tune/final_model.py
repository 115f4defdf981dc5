"""The model a finished tune writes: hyperparameters.json (the best trial's set), model/ and
tuning.json.

`--final-model selection` (the default): the trials' models that Caruana's ensemble
selection (`selection.ensemble_weights`) weighs on the objective's test points.
`--final-model refit`, SageMaker's rule: the best training job's model; after a held-out
objective, its hyperparameters trained on the whole train channel. Either way the spread
about the median is then calibrated on the objective's test points. Each model's forecasts
of those points are drawn once (`backtest.held_out_forecasts`) and scored from there.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from deepar_cli.atomic import atomic_dir, write_json
from deepar_cli.config.hyperparameters import resolve
from deepar_cli.config.tuning_config import sagemaker_values
from deepar_cli.errors import HyperparameterError
from deepar_cli.evaluation.backtest import HeldOutForecasts, held_out_forecasts
from deepar_cli.model import modelfolder
from deepar_cli.training import Log
from deepar_cli.tune.events import count_text
from deepar_cli.tune.trials import (
    TuneResult,
    TuningJob,
    best_trial,
    completed,
    finite,
    model_here,
    shown_url,
    state_of,
    study_trials,
)

# The spreads calibration chooses from: 0.5, 0.55, ..., 1.5 (1: the forecasts as drawn).
SPREADS = tuple(round(0.5 + 0.05 * k, 2) for k in range(21))


def finish(study: Any, job: TuningJob, output_dir: Path, evaluation: str, train_channel: Path,
           final_model: str, result: TuneResult, log: Log) -> None:
    """Best hyperparameters, summary and model, once the study is done."""
    best = best_trial(study_trials(study))
    if best is None:
        failed = [t for t in study_trials(study) if state_of(t) == "FAILED"]
        first = f"; trial {failed[0].number}: {failed[0].user_attrs['fail_reason']}" if (
            failed) else ""
        raise HyperparameterError(f"no trial completed ({count_text(result.counts)}){first}")
    tuned = best.user_attrs["hyperparameters"]
    result.best = {"trial": best.number, "value": best.value, "hyperparameters": tuned}
    log("best", {**result.best, "objective": job.config.objective, "counts": result.counts,
                 "stop_reason": result.stop_reason})
    hp_path = output_dir / "hyperparameters.json"
    write_json(hp_path, sagemaker_values({**job.static, **tuned}))
    members, weights, drawn = (_ensemble_selection(study, job, log)
                               if final_model == "selection" else ([best], None, None))
    spread = _calibrate(members, job, drawn, log)
    source = {**_model_source(members, job, evaluation, train_channel, final_model),
              **({"weights": weights} if weights else {}), "spread": spread}
    summary_path = output_dir / "tuning.json"
    if _previous_model(summary_path) == source and (output_dir / "model").is_dir():
        log("model", {**source, "how": "unchanged", "path": str(output_dir / "model")})
    else:
        _write_model(members, job, source, output_dir, log)
    write_json(summary_path, {
        "study_name": job.study_name, "storage": shown_url(job.storage),
        "strategy": job.config.strategy, "objective": job.config.objective,
        "evaluation": evaluation, "counts": result.counts, "stop_reason": result.stop_reason,
        "best_trial": best.number, "best_value": best.value, "hyperparameters": tuned,
        "model": source})
    result.files += [hp_path, output_dir / "model", summary_path]


def _ensemble_selection(study: Any, job: TuningJob, log: Log
                        ) -> Tuple[List[Any], Optional[List[int]], Optional[HeldOutForecasts]]:
    """Caruana's ensemble selection over the complete trials' models on this machine, scored
    on the objective's test points: the trials chosen, most weight first, their weights, and
    the chosen model's forecasts of those points; the best trial alone where there are no
    such points or models (its forecasts not drawn), and where it alone scores best."""
    from deepar_cli.tune import selection

    ranked = sorted(completed(study_trials(study)), key=lambda t: (t.value, t.number))
    here = [t for t in ranked if model_here(t)]
    reason = ("the objective scores no test points" if job.test is None else
              None if here else "no trial's model is on this machine")
    if reason:
        log("selection", {"reason": reason})
        return ranked[:1], None, None
    drawn = [held_out_forecasts(modelfolder.load(Path(t.user_attrs["model_dir"])), job.test,
                                seed=job.seed, windows=job.windows) for t in here]
    forecasts = [d.sorted_paths() for d in drawn]
    metric = job.config.objective.split(":", 1)[1]
    counts = selection.ensemble_weights([paths for paths, _ in forecasts], forecasts[0][1],
                                        metric, drawn[0].quantiles)
    chosen = sorted((k for k, count in enumerate(counts) if count), key=lambda k: -counts[k])
    members, weights = [here[k] for k in chosen], [counts[k] for k in chosen]
    figures: Dict[str, Any] = {"candidates": len(here), "trials": [t.number for t in members],
                               "weights": weights, "objective": job.config.objective,
                               "best_value": ranked[0].value}
    if len(members) == 1:
        log("selection", {**figures, "value": members[0].value})
        return members, None, drawn[chosen[0]]
    mixture = held_out_forecasts(modelfolder.load(_trials_ensemble(members, job, weights)),
                                 job.test, seed=job.seed, windows=job.windows)
    metrics = mixture.scores()
    log("selection", {**figures, "value": metrics[metric], "test_metrics": finite(metrics)})
    return members, weights, mixture


def _trials_ensemble(members: Sequence[Any], job: TuningJob, weights: Sequence[int]) -> Path:
    """The trials' models (on this machine) as one ensemble folder in the trials' folder."""
    folder = job.trials_dir / "ensemble"
    with atomic_dir(folder) as tmp:
        for k, trial in enumerate(members):
            shutil.copytree(trial.user_attrs["model_dir"], tmp / "members" / str(k))
        modelfolder.write_ensemble(tmp, len(members), {
            "ensemble": {"trials": [t.number for t in members]}}, weights)
    return folder


def _calibrate(trials: Sequence[Any], job: TuningJob, drawn: Optional[HeldOutForecasts],
               log: Log) -> float:
    """The spread of SPREADS whose forecasts by `trials`' models (the final model's, before
    any refit; `drawn` where they are drawn already) score the best mean_wQuantileLoss on the
    objective's test points; 1 when there are none, or the models are on another machine."""
    reason = ("the objective scores no test points" if job.test is None else
              None if all(model_here(t) for t in trials) else
              "the chosen trials' models are on another machine")
    if reason:
        log("calibration", {"spread": 1.0, "reason": reason})
        return 1.0
    if drawn is None:  # one trial's model: the refit's, or selection's best trial alone
        drawn = held_out_forecasts(modelfolder.load(Path(trials[0].user_attrs["model_dir"])),
                                   job.test, seed=job.seed, windows=job.windows)
    scores = {spread: drawn.scores(spread) for spread in SPREADS}
    spread = min(SPREADS, key=lambda s: (scores[s]["mean_wQuantileLoss"], abs(s - 1)))
    log("calibration", {"spread": spread, "before": finite(scores[1.0]),
                        "after": finite(scores[spread])})
    return spread


def _model_source(trials: Sequence[Any], job: TuningJob, evaluation: str, train_channel: Path,
                  final_model: str) -> Dict[str, Any]:
    numbers = {"trial": trials[0].number} if len(trials) == 1 else {
        "trials": [t.number for t in trials]}
    if evaluation == "holdout" and final_model == "refit":
        return {**numbers, "how": "refit", "train": str(train_channel)}
    here = all(model_here(t) for t in trials)
    return {**numbers, "how": "copy" if here else "retrain", "train": str(job.train),
            "holdout": evaluation == "holdout"}


def _write_model(trials: Sequence[Any], job: TuningJob, source: Dict[str, Any],
                 output_dir: Path, log: Log) -> None:
    """DIR/model as `source["how"]` says: "refit", the best trial's hyperparameters trained
    on the whole train channel; "copy" or "retrain", the trials' own models (copied, or
    trained again here when on another machine). Then the spread."""
    target = output_dir / "model"
    log("model", {**source, "path": str(target)})
    refit_on = Path(source["train"]) if source["how"] == "refit" else None
    with atomic_dir(target) as folder:
        if len(trials) == 1:
            _member(trials[0], refit_on, job, folder, log)
        else:
            for count, trial in enumerate(trials):
                _member(trial, refit_on, job, folder / "members" / str(count), log)
            modelfolder.write_ensemble(folder, len(trials), {"ensemble": source},
                                       source.get("weights"))
        if source["spread"] != 1.0:
            modelfolder.write_spread(folder, source["spread"])


def _member(trial: Any, refit_on: Optional[Path], job: TuningJob, target: Path,
            log: Log) -> None:
    """At `target`: the trial's hyperparameters trained on the whole train channel
    `refit_on`; without one, the trial's own model (copied when it is on this machine,
    else trained again on the trials' data)."""
    from deepar_cli.training import train

    if refit_on is None and model_here(trial):
        shutil.copytree(trial.user_attrs["model_dir"], target, dirs_exist_ok=True)
        return
    hp = resolve({**job.static, **trial.user_attrs["hyperparameters"]})
    train(refit_on or job.train, hp, target, test_channel=None if refit_on else job.test,
          seed=job.seed, log=log)


def _previous_model(summary_path: Path) -> Any:
    """Where the model of an earlier run of this tune came from (to skip training it again)."""
    try:
        return json.loads(summary_path.read_text()).get("model")
    except (OSError, ValueError, AttributeError):
        return None
