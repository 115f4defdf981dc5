"""Backtests scored with the GluonTS Evaluator, with a seasonal-naive baseline beside."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from deepar_cli.data.dataset import Source, read_with_stats, require_held_out, to_entries
from deepar_cli.data.holdout import drop_last
from deepar_cli.errors import DataError, UsageError
from deepar_cli.model.modelfolder import Model

HEADLINE = ("RMSE", "mean_wQuantileLoss")
REPORTED = ("RMSE", "mean_wQuantileLoss", "MASE", "sMAPE", "ND", "MSE", "MAPE", "MSIS")


def quantile_key(q: float) -> str:
    """The Evaluator's spelling of a quantile level, e.g. 0.1 -> "0.1"."""
    from gluonts.model.forecast import Quantile

    return Quantile.parse(q).name


def window_entries(entries: Sequence[Dict[str, Any]], prediction_length: int, window: int
                   ) -> List[Dict[str, Any]]:
    """The series as they stood before backtest window `window` (0: the last
    `prediction_length` points are the truth): the later windows' points dropped."""
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
        cut.append(drop_last(entry, drop, cut_features=True))
    return cut


def _evaluate(predictor: Any, entries: List[Dict[str, Any]], quantiles: Sequence[float],
              prediction_length: int, *, num_samples: int, seed: int
              ) -> tuple[Dict[str, float], pd.DataFrame]:
    """Forecast each series' last `prediction_length` points through the one forecast path
    and score them with the GluonTS Evaluator."""
    from deepar_cli.model.forecasting import forecast_held_out

    return _score(list(forecast_held_out(predictor, entries, prediction_length,
                                         num_samples=num_samples, seed=seed)), quantiles)


def _score(pairs: Sequence[tuple[Dict[str, Any], Any]], quantiles: Sequence[float]
           ) -> tuple[Dict[str, float], pd.DataFrame]:
    """The GluonTS Evaluator's aggregate and per-series figures of (entry, forecast) pairs."""
    from gluonts.evaluation import Evaluator

    from deepar_cli.model.forecasting import truth_frame

    agg, items = Evaluator(quantiles=list(quantiles), num_workers=0)(
        [truth_frame(entry) for entry, _ in pairs], [fc for _, fc in pairs])
    return {k: float(v) for k, v in agg.items()}, items


def headline(agg: Dict[str, float], quantiles: Sequence[float]) -> Dict[str, float]:
    """SageMaker's test-channel figures: RMSE, mean_wQuantileLoss, wQuantileLoss[q]."""
    out = {name: agg[name] for name in HEADLINE}
    for q in quantiles:
        key = f"wQuantileLoss[{quantile_key(q)}]"
        out[key] = agg[key]
    return out


def test_scores(model: Model, entries: List[Dict[str, Any]], *, seed: int) -> Dict[str, float]:
    """What SageMaker logs for a test channel, with `num_eval_samples` and `test_quantiles`,
    and the Coverage at each quantile beside (how often the truth fell below it)."""
    quantiles = model.hp.test_quantiles
    agg, _ = _evaluate(model.predictor, entries, quantiles, model.hp.prediction_length,
                       num_samples=model.hp.num_eval_samples, seed=seed)
    return _test_figures(agg, quantiles)


def _test_figures(agg: Dict[str, float], quantiles: Sequence[float]) -> Dict[str, float]:
    coverage = {f"Coverage[{quantile_key(q)}]": agg[f"Coverage[{quantile_key(q)}]"]
                for q in quantiles}
    return {**headline(agg, quantiles), **coverage}


def _test_entries(model: Model, source: Source, why: str = "") -> List[Dict[str, Any]]:
    """A test channel (or GluonTS dataset) of full series as the model's entries; every
    series must be long enough to hold out its last points (`why` ends the message)."""
    records, _ = read_with_stats(source)
    require_held_out(records, model.hp.prediction_length, source, why)
    return to_entries(records, model.hp.freq, model.features)


def score_channel(model: Model, source: Source, *, seed: int, windows: int = 1
                  ) -> Dict[str, float]:
    """`test_scores` of a test channel (or GluonTS dataset) of full series; with `windows`
    > 1, the scores pooled over that many rolling windows, as `evaluate --windows`."""
    if windows > 1:
        pooled = evaluate_source(model, source, seed=seed, windows=windows).overall
        return _test_figures(pooled, model.hp.test_quantiles)
    return test_scores(model, _test_entries(model, source, " to hold out its last points"),
                       seed=seed)


@dataclass(frozen=True)
class HeldOutForecasts:
    """A model's forecasts of `score_channel`'s points, drawn once: (entry, forecast) of
    each series, a list for each rolling window."""

    windows: List[List[tuple[Dict[str, Any], Any]]]
    quantiles: Sequence[float]
    prediction_length: int

    def scores(self, spread: float = 1.0) -> Dict[str, float]:
        """`score_channel`'s figures, with `spread` (`forecasting.scale_spread`) applied."""
        from deepar_cli.model.forecasting import forecast_class, scale_spread

        forecast = forecast_class()
        items = [_score([(entry, forecast(scale_spread(fc.samples, spread),
                                          start_date=fc.start_date)) for entry, fc in pairs],
                        self.quantiles)[1] for pairs in self.windows]
        return _test_figures(_pooled(items, self.quantiles), self.quantiles)

    def sorted_paths(self) -> tuple[np.ndarray, np.ndarray]:
        """The forecasts, each step's samples sorted, (series x windows, samples,
        prediction_length), and the truth beside, (series x windows, prediction_length)."""
        pairs = [pair for window in self.windows for pair in window]
        points = self.prediction_length
        return (np.stack([np.sort(fc.samples, axis=0) for _, fc in pairs]),
                np.stack([entry["target"][-points:] for entry, _ in pairs]))


def held_out_forecasts(model: Model, source: Source, *, seed: int, windows: int = 1
                       ) -> HeldOutForecasts:
    """The model's forecasts of each series' held-out points in each rolling window, with
    `num_eval_samples`, to score (with any spread) without drawing them again."""
    from deepar_cli.model.forecasting import forecast_held_out

    hp = model.hp
    entries = _test_entries(model, source, " to hold out its last points")
    return HeldOutForecasts(
        [list(forecast_held_out(model.predictor,
                                window_entries(entries, hp.prediction_length, window),
                                hp.prediction_length, num_samples=hp.num_eval_samples,
                                seed=seed)) for window in range(windows)],
        hp.test_quantiles, hp.prediction_length)


def score_paths(paths: np.ndarray, truth: np.ndarray, metric: str,
                quantiles: Sequence[float]) -> float:
    """The GluonTS Evaluator's aggregate `metric` ("RMSE", or "mean_wQuantileLoss" over
    `quantiles`) of sorted sample paths (series, samples, steps) against the truth (series,
    steps): GluonTS's own metric functions over every series at once (the Evaluator sums
    them series by series: the same figure, to rounding), fast enough to score thousands
    of mixtures."""
    from gluonts.evaluation import metrics

    from deepar_cli.model.forecasting import sorted_quantiles

    if metric == "RMSE":
        return float(np.sqrt(metrics.mse(truth, paths.mean(axis=1))))
    predicted = sorted_quantiles(np.moveaxis(paths, 1, 0), quantiles)  # (quantiles, series, steps)
    total = metrics.abs_target_sum(truth)
    return float(np.mean([metrics.quantile_loss(truth, level, q) / total
                          for level, q in zip(predicted, quantiles)]))


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


def _reported(agg: Dict[str, float], quantiles: Sequence[float]) -> Dict[str, float]:
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

    hp = model.hp
    quantiles = list(hp.test_quantiles if quantiles is None else quantiles)
    num_samples = hp.num_eval_samples if num_samples is None else num_samples
    if not quantiles or not all(0 < q < 1 for q in quantiles):
        raise UsageError(f"quantiles must be one or more numbers in (0, 1), got {quantiles}")
    if windows < 1:
        raise UsageError(f"windows must be at least 1, got {windows}")
    naive = SeasonalNaivePredictor(prediction_length=hp.prediction_length,
                                   season_length=get_seasonality(hp.freq))
    per_window, items, naive_items = [], [], []
    for window in range(windows):
        cut = window_entries(entries, hp.prediction_length, window)
        agg, item = _evaluate(model.predictor, cut, quantiles, hp.prediction_length,
                              num_samples=num_samples, seed=seed)
        naive_agg, naive_item = _naive(naive, cut, quantiles, hp.prediction_length)
        item.insert(0, "window", window + 1)
        item.insert(1, "series", np.arange(len(cut)))
        items.append(item)
        naive_items.append(naive_item)
        per_window.append({"window": window + 1, **_reported(agg, quantiles),
                           "seasonal_naive": _reported(naive_agg, quantiles)})
    if windows == 1:
        overall = {k: v for k, v in per_window[0].items()
                   if k not in ("window", "seasonal_naive")}
        baseline = per_window[0]["seasonal_naive"]
    else:
        overall = _pooled(items, quantiles)
        baseline = _pooled(naive_items, quantiles)
    return Backtest(quantiles, per_window, overall, baseline,
                    pd.concat(items, ignore_index=True))


def _naive(predictor: Any, entries: List[Dict[str, Any]], quantiles: Sequence[float],
           prediction_length: int) -> tuple[Dict[str, float], pd.DataFrame]:
    """The seasonal-naive baseline's scores (a point forecast: no sampling involved)."""
    from gluonts.evaluation import Evaluator

    from deepar_cli.model.forecasting import hold_out, truth_frame

    forecasts = predictor.predict([hold_out(e, prediction_length) for e in entries])
    agg, items = Evaluator(quantiles=list(quantiles), num_workers=0)(
        [truth_frame(e) for e in entries], forecasts)
    return {k: float(v) for k, v in agg.items()}, items


def _pooled(items: List[pd.DataFrame], quantiles: Sequence[float]) -> Dict[str, float]:
    """Aggregate per-series metrics of several windows the way the Evaluator does."""
    from gluonts.evaluation import Evaluator

    evaluator = Evaluator(quantiles=list(quantiles), num_workers=0)
    agg, _ = evaluator.get_aggregate_metrics(pd.concat(items, ignore_index=True))
    return _reported({k: float(v) for k, v in agg.items()}, quantiles)


def evaluate_source(model: Model, source: Source, *, seed: int,
                    quantiles: Optional[Sequence[float]] = None,
                    num_samples: Optional[int] = None, windows: int = 1) -> Backtest:
    """Backtest a test channel or GluonTS dataset of full series (see `backtest`)."""
    return backtest(model, _test_entries(model, source), seed=seed, quantiles=quantiles,
                    num_samples=num_samples, windows=windows)


def evaluate_channel(model: Model, channel: Source, output_dir: Path, *, seed: int,
                     quantiles: Optional[Sequence[float]] = None,
                     num_samples: Optional[int] = None, windows: int = 1) -> Backtest:
    """`deepar-cli evaluate`: backtest a test channel, write metrics.json and per_series.csv."""
    from deepar_cli.atomic import atomic_file, write_json

    result = evaluate_source(model, channel, seed=seed, quantiles=quantiles,
                             num_samples=num_samples, windows=windows)
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
