"""tune's events: their names, and each one as the log line `reporting` prints.

An event is (name, figures), as `train`'s are; `reporting.format_event` hands tune's here.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

# Every event tune logs besides train's (each trial's own log has train's events).
EVENTS = ("tune", "trial", "waiting", "best", "selection", "calibration", "model")


def count_text(counts: Mapping[str, int]) -> str:
    """Trial counts as words, e.g. "3 complete, 1 failed"."""
    return ", ".join(f"{n} {state}" for state, n in counts.items() if n) or "no trial"


def _values_text(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in values.items())


def describe_event(event: str, figures: Dict[str, Any]) -> Optional[str]:
    """One of tune's events as a log line (None for a name not in EVENTS)."""
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
                f"({count_text(figures['counts'])}; {figures['stop_reason']})")
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
        spread = f"; spread x {figures['spread']:g}" if figures["spread"] != 1.0 else ""
        return f"model: {figures['path']} <- {_model_text(figures)}{spread}"
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


def _model_text(figures: Dict[str, Any]) -> str:
    if "trials" in figures:  # ensemble selection's members
        members = f"trials {', '.join(map(str, figures['trials']))}"
        if figures["how"] == "unchanged":
            return f"the ensemble of {members}, already there"
        weights = ":".join(map(str, figures["weights"]))
        return (f"an ensemble of the models of {members}, weighted {weights} (trained on "
                f"{figures['train']}" + ("; no refit)" if figures.get("holdout") else ")"))
    return {
        "refit": f"the best hyperparameters (trial {figures['trial']}) trained on the whole "
                 f"train channel {figures['train']}",
        "copy": f"trial {figures['trial']}'s model (trained on {figures['train']}"
                + ("; no refit)" if figures.get("holdout") else ")"),
        "retrain": f"trial {figures['trial']}'s hyperparameters trained again here (its "
                   f"model is on another machine)",
        "unchanged": f"trial {figures['trial']}'s model, already there",
    }[figures["how"]]
