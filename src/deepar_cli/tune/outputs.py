"""What a tune writes about its trials: trials.csv and trials.json, objective.png (the
objective per trial and the best so far) and importance.png (which hyperparameters mattered).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Dict, List, Tuple

import optuna

from deepar_cli.atomic import atomic_file, write_json
from deepar_cli.config.tuning_config import TuningConfig
from deepar_cli.tune.trials import completed, state_of, study_trials


def trial_row(trial: Any) -> Dict[str, Any]:
    """One finished trial as the trials table shows it."""
    attrs = trial.user_attrs
    seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() if (
        trial.datetime_complete and trial.datetime_start) else None
    reason = attrs.get("fail_reason") or attrs.get("stopped") or (
        f"pruned at epoch {attrs['pruned_at_epoch']}" if "pruned_at_epoch" in attrs else
        "its process died" if state_of(trial) == "STOPPED" else None)
    return {"number": trial.number, "state": state_of(trial), "objective": trial.value,
            "seconds": None if seconds is None else round(seconds, 1),
            "hyperparameters": attrs.get("hyperparameters", {}),
            "final_loss": attrs.get("final_loss"), "test_metrics": attrs.get("test_metrics", {}),
            "reason": reason}


def write_table(rows: List[Dict[str, Any]], config: TuningConfig, output_dir: Path
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


def plot_objective(rows: List[Dict[str, Any]], metric: str, path: Path) -> None:
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


def plot_importance(study: Any, path: Path) -> None:
    """Which hyperparameters mattered: Optuna's PED-ANOVA importance over complete trials."""
    from deepar_cli.evaluation.plotting import save_png

    fig, ax = _figure()
    finished = len(completed(study_trials(study)))
    importance = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()) if finished >= 2 else {}
    if importance:
        names = list(importance)[::-1]  # "1-dropout_rate" is dropout_rate on a reverse log scale
        ax.barh([n.removeprefix("1-") for n in names], [importance[n] for n in names],
                color="tab:blue")
        ax.set_xlabel("importance (PED-ANOVA; sums to 1)")
    else:
        ax.text(0.5, 0.5, "ranking hyperparameters needs 2 complete trials", ha="center",
                va="center")
        ax.set_axis_off()
    ax.set_title(f"which hyperparameters mattered ({finished} complete trials)")
    save_png(fig, path)
