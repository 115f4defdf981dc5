"""Backtests scored with the GluonTS Evaluator, with a seasonal-naive baseline beside."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from deepar_cli.errors import DataError
from deepar_cli.modelfolder import Model

HEADLINE = ("RMSE", "mean_wQuantileLoss")
REPORTED = ("RMSE", "mean_wQuantileLoss", "MASE", "sMAPE", "ND", "MSE", "MAPE", "MSIS")


def quantile_key(q: float) -> str:
    """The Evaluator's spelling of a quantile level, e.g. 0.1 -> "0.1"."""
    from gluonts.model.forecast import Quantile

    return Quantile.parse(q).name


def cut_windows(entries: Sequence[Dict[str, Any]], prediction_length: int, window: int
                ) -> List[Dict[str, Any]]:
    """Drop the last `window * prediction_length` points (window 0 keeps the series whole)."""
    drop = window * prediction_length
    if drop == 0:
        return list(entries)
    cut = []
    for entry in entries:
        keep = entry["target"].size - drop
        if keep <= prediction_length:
            raise DataError(
                f"window {window + 1} needs series longer than {drop + prediction_length} "
                f"points; one has {entry['target'].size}"
            )
        short = dict(entry, target=entry["target"][:keep])
        if "feat_dynamic_real" in entry:
            short["feat_dynamic_real"] = entry["feat_dynamic_real"][:, :keep]
        cut.append(short)
    return cut


def _evaluate(predictor: Any, entries: List[Dict[str, Any]], quantiles: Sequence[float],
              num_samples: int) -> tuple[Dict[str, float], pd.DataFrame, List[Any]]:
    from gluonts.evaluation import Evaluator, make_evaluation_predictions

    forecast_it, truth_it = make_evaluation_predictions(entries, predictor,
                                                        num_samples=num_samples)
    forecasts, truths = list(forecast_it), list(truth_it)
    agg, items = Evaluator(quantiles=list(quantiles), num_workers=0)(truths, forecasts)
    return {k: float(v) for k, v in agg.items()}, items, forecasts


def headline(agg: Dict[str, float], quantiles: Sequence[float]) -> Dict[str, float]:
    """SageMaker's test-channel figures: RMSE, mean_wQuantileLoss, wQuantileLoss[q]."""
    out = {name: agg[name] for name in HEADLINE}
    for q in quantiles:
        key = f"wQuantileLoss[{quantile_key(q)}]"
        out[key] = agg[key]
    return out


def test_scores(model: Model, entries: List[Dict[str, Any]], *, seed: int) -> Dict[str, float]:
    """What SageMaker logs for a test channel, with `num_eval_samples` and `test_quantiles`."""
    from deepar_cli.training import seed_everything

    seed_everything(seed)
    agg, _, _ = _evaluate(model.predictor, entries, model.hp.test_quantiles,
                          model.hp.num_eval_samples)
    return headline(agg, model.hp.test_quantiles)


@dataclass
class Backtest:
    """Scores per window and overall, for DeepAR and the seasonal-naive baseline."""

    quantiles: List[float]
    windows: List[Dict[str, Any]]
    overall: Dict[str, float]
    baseline: Dict[str, float]
    per_series: pd.DataFrame

    def summary(self) -> Dict[str, Any]:
        return {"quantiles": self.quantiles, "overall": self.overall,
                "seasonal_naive": self.baseline, "windows": self.windows}


def _select(agg: Dict[str, float], quantiles: Sequence[float]) -> Dict[str, float]:
    out = {name: agg[name] for name in REPORTED if name in agg}
    for q in quantiles:
        key = quantile_key(q)
        out[f"wQuantileLoss[{key}]"] = agg[f"wQuantileLoss[{key}]"]
        out[f"Coverage[{key}]"] = agg[f"Coverage[{key}]"]
    return out


def backtest(model: Model, entries: List[Dict[str, Any]], *, seed: int,
             quantiles: Optional[Sequence[float]] = None, num_samples: Optional[int] = None,
             windows: int = 1) -> Backtest:
    """Forecast the last `prediction_length` points of every series (and, with `windows`,
    that many rolling windows further back) and score them with the GluonTS Evaluator."""
    from gluonts.model.seasonal_naive import SeasonalNaivePredictor
    from gluonts.time_feature import get_seasonality

    from deepar_cli.training import seed_everything

    hp = model.hp
    quantiles = list(quantiles or hp.test_quantiles)
    num_samples = num_samples or hp.num_eval_samples
    naive = SeasonalNaivePredictor(prediction_length=hp.prediction_length,
                                   season_length=get_seasonality(hp.freq))
    per_window, items, naive_items = [], [], []
    seed_everything(seed)
    for window in range(windows):
        window_entries = cut_windows(entries, hp.prediction_length, window)
        agg, item, _ = _evaluate(model.predictor, window_entries, quantiles, num_samples)
        naive_agg, naive_item, _ = _evaluate(naive, window_entries, quantiles, 1)
        item.insert(0, "window", window + 1)
        item.insert(1, "series", np.arange(len(window_entries)))
        items.append(item)
        naive_items.append(naive_item)
        per_window.append({"window": window + 1, **_select(agg, quantiles),
                           "seasonal_naive": _select(naive_agg, quantiles)})
    if windows == 1:
        overall = {k: v for k, v in per_window[0].items()
                   if k not in ("window", "seasonal_naive")}
        baseline = per_window[0]["seasonal_naive"]
    else:
        overall = _pooled(items, quantiles)
        baseline = _pooled(naive_items, quantiles)
    return Backtest(quantiles, per_window, overall, baseline,
                    pd.concat(items, ignore_index=True))


def _pooled(items: List[pd.DataFrame], quantiles: Sequence[float]) -> Dict[str, float]:
    """Aggregate per-series metrics of several windows the way the Evaluator does."""
    from gluonts.evaluation import Evaluator

    evaluator = Evaluator(quantiles=list(quantiles), num_workers=0)
    agg, _ = evaluator.get_aggregate_metrics(pd.concat(items, ignore_index=True))
    return _select({k: float(v) for k, v in agg.items()}, quantiles)


def parse_quantiles(text: str) -> List[float]:
    """ "0.1,0.5,0.9" -> [0.1, 0.5, 0.9], each in (0, 1)."""
    from deepar_cli.errors import UsageError

    levels = []
    for part in text.split(","):
        try:
            level = float(part)
        except ValueError:
            level = float("nan")
        if not 0 < level < 1:
            raise UsageError(f'--quantiles must be numbers in (0, 1) separated by commas, '
                             f'got "{part.strip()}"')
        levels.append(level)
    return levels


def evaluate_channel(model: Model, channel: Any, output_dir: Any, *, seed: int,
                     quantiles: Optional[Sequence[float]] = None,
                     num_samples: Optional[int] = None, windows: int = 1) -> Backtest:
    """`deepar-cli evaluate`: backtest a test channel, write metrics.json and per_series.csv."""
    from deepar_cli.atomic import atomic_file
    from deepar_cli.dataset import read_with_stats, require_held_out, to_entries
    from deepar_cli.modelfolder import write_json

    records, _ = read_with_stats(channel)
    require_held_out(records, model.hp.prediction_length)
    entries = to_entries(records, model.hp.freq, model.features)
    result = backtest(model, entries, seed=seed, quantiles=quantiles, num_samples=num_samples,
                      windows=windows)
    write_json(output_dir / "metrics.json", result.summary())
    with atomic_file(output_dir / "per_series.csv") as tmp:
        result.per_series.to_csv(tmp, index=False)
    return result


def format_table(result: Backtest) -> str:
    """DeepAR beside seasonal naive, one metric a row."""
    rows = [f"{'metric':<22}{'DeepAR':>12}{'seasonal naive':>16}"]
    for name, value in result.overall.items():
        other = result.baseline.get(name, float("nan"))
        rows.append(f"{name:<22}{value:>12.6g}{other:>16.6g}")
    if len(result.windows) > 1:
        rows.append("")
        rows.append(f"{'window':<8}{'RMSE':>12}{'mean_wQuantileLoss':>20}")
        for w in result.windows:
            rows.append(f"{w['window']:<8}{w['RMSE']:>12.6g}{w['mean_wQuantileLoss']:>20.6g}")
    return "\n".join(rows)
