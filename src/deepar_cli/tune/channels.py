"""tune's data: the train channel checked once before any trial, and, without a test
channel, the held-out channels the trials train and are scored on.

`holdout` is tune's own slicer of each series' last points; it is to give way to the one
hold-out slicer in `deepar_cli.data` (data/holdout.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from deepar_cli.config import memory
from deepar_cli.config.hyperparameters import Hyperparameters, resolve
from deepar_cli.config.tuning_config import TuningConfig
from deepar_cli.data.holdout import drop_last
from deepar_cli.data.records import Record
from deepar_cli.errors import DataError
from deepar_cli.training import Log


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


def trial_channels(train: Path, test: Optional[Path], base: Hyperparameters, config: TuningConfig,
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
