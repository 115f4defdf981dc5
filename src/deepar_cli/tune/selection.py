"""Caruana et al.'s ensemble selection (2004), as AutoGluon weights its ensembles: greedy
forward selection with replacement of models' forecasts, scored on held-out points.

Forecasts are sample paths with each step's samples sorted, (series, samples, steps); an
ensemble's paths are its members' averaged with the weights (`forecasting.Ensemble`), so
its quantiles are the members' quantiles averaged.
"""

from __future__ import annotations

from typing import List, Sequence

import numpy as np

from deepar_cli.model.forecasting import sorted_quantiles

# AutoGluon's default is 100 rounds over hundreds of models; with a tune's 20 or so trials
# the chosen weights settle well before 25.
ROUNDS = 25
METRICS = ("mean_wQuantileLoss", "RMSE")


def score(paths: np.ndarray, truth: np.ndarray, metric: str,
          quantiles: Sequence[float]) -> float:
    """The GluonTS Evaluator's aggregate `metric` ("RMSE" or "mean_wQuantileLoss" over
    `quantiles`), as `evaluation` scores forecasts, of paths (series, samples, steps), each
    step's samples sorted, against truth (series, steps)."""
    if metric == "RMSE":
        return float(np.sqrt(np.mean((paths.mean(axis=1) - truth) ** 2)))
    levels = np.asarray(quantiles)[:, None, None]
    predicted = sorted_quantiles(np.moveaxis(paths, 1, 0), quantiles)  # (quantiles, series, steps)
    losses = 2 * np.abs((truth - predicted) * ((truth <= predicted) - levels)).sum(axis=(1, 2))
    return float(np.mean(losses / np.abs(truth).sum()))


def select(forecasts: Sequence[np.ndarray], truth: np.ndarray, metric: str,
           quantiles: Sequence[float], rounds: int = ROUNDS) -> List[int]:
    """Each forecast's weight (how often it was chosen; 0: left out): each round adds the
    forecast whose addition scores best, and the rounds kept end at the best score."""
    total = np.zeros_like(forecasts[0], dtype=np.float64)
    chosen: List[int] = []
    best_score, best_length = float("inf"), 0
    for _ in range(rounds):
        size = len(chosen) + 1
        scores = [score((total + f) / size, truth, metric, quantiles) for f in forecasts]
        pick = int(np.argmin(scores))
        chosen.append(pick)
        total += forecasts[pick]
        if scores[pick] < best_score:
            best_score, best_length = scores[pick], size
    return [chosen[:best_length].count(k) for k in range(len(forecasts))]
