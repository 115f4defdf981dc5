"""Caruana et al.'s ensemble selection (2004), as AutoGluon weights its ensembles: greedy
forward selection with replacement of models' forecasts, scored on held-out points.

Forecasts are sample paths with each step's samples sorted, (series, samples, steps); an
ensemble's paths are its members' averaged with the weights (`forecasting.Ensemble`), so
its quantiles are the members' quantiles averaged. Each mixture is scored as the GluonTS
Evaluator scores it (`backtest.score_paths`).
"""

from __future__ import annotations

from typing import List, Sequence

import numpy as np

from deepar_cli.evaluation.backtest import score_paths

# AutoGluon's default is 100 rounds over hundreds of models; with a tune's 20 or so trials
# the chosen weights settle well before 25.
ROUNDS = 25
METRICS = ("mean_wQuantileLoss", "RMSE")


def ensemble_weights(forecasts: Sequence[np.ndarray], truth: np.ndarray, metric: str,
                     quantiles: Sequence[float], rounds: int = ROUNDS) -> List[int]:
    """Each forecast's weight (how often it was chosen; 0: left out): each round adds the
    forecast whose addition scores best, and the rounds kept end at the best score."""
    total = np.zeros_like(forecasts[0], dtype=np.float64)
    chosen: List[int] = []
    best_score, best_length = float("inf"), 0
    for _ in range(rounds):
        size = len(chosen) + 1
        scores = [score_paths((total + f) / size, truth, metric, quantiles) for f in forecasts]
        pick = int(np.argmin(scores))
        chosen.append(pick)
        total += forecasts[pick]
        if scores[pick] < best_score:
            best_score, best_length = scores[pick], size
    return [chosen[:best_length].count(k) for k in range(len(forecasts))]
