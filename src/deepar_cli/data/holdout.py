"""Hold-out slicing: a series without its last points, the one place that cuts them.

`tune` holds out the training series' last windows to score trials on (records, features
cut with the target), `evaluate` backtests earlier windows (entries, features cut too) and
a forecast of held-out points needs the features over the horizon (entries, features
kept). What to do with a series too short to cut stays with each caller, and so do its
messages.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, TypeVar, Union

from deepar_cli.data.records import Record

Series = TypeVar("Series", bound=Union[Record, Dict[str, Any]])


def drop_last(series: Series, points: int, *, cut_features: bool) -> Series:
    """`series` (a Record or a GluonTS entry) without its last `points` target values; its
    dynamic features lose them too if `cut_features`, else keep their length."""
    if isinstance(series, Record):
        keep = series.target.size - points
        feat = series.dynamic_feat
        return replace(series, target=series.target[:keep],
                       dynamic_feat=feat[:, :keep] if cut_features and feat is not None
                       else feat)
    keep = series["target"].size - points
    cut = dict(series, target=series["target"][:keep])
    if cut_features and "feat_dynamic_real" in series:
        cut["feat_dynamic_real"] = series["feat_dynamic_real"][:, :keep]
    return cut
