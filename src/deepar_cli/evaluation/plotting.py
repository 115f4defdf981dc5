"""The SageMaker DeepAR notebook's picture: observed target, p50 line, p10-p90 band.

For each chosen series the model forecasts the last `prediction_length` points from the
series without them (or, given a train channel, from the train record, with the test
record's extra points as the truth), so the held-out truth shows against the band.

    series-<i>.png   one series: its last context_length + prediction_length points
    forecasts.png    every chosen series in one grid
    plot.json        per series: index, start, timestamps, p10/p50/p90 and the truth

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no global backend
switch), and every file is written atomically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np
import pandas as pd

from deepar_cli.atomic import atomic_file, make_output_dir, write_json
from deepar_cli.errors import DataError, UsageError
from deepar_cli.model.forecasting import DEFAULT_SEED
from deepar_cli.model.modelfolder import Model

QUANTILES = (0.1, 0.5, 0.9)
DEFAULT_SERIES = 5  # without --series: the first five, as the notebook plots
MAX_SERIES = 1000  # one PNG each: more is a typo, not a plot
GRID_LIMIT = 24  # panels in forecasts.png; more would make an unreadable poster
GRID_FILE = "forecasts.png"
JSON_FILE = "plot.json"
SERIES_SIZE = (10.0, 4.0)  # inches, per series figure
DPI = 100

OBSERVED_COLOR = "#222222"
FORECAST_COLOR = "#1f77b4"
LABELS = ("observed", "p50 forecast", "80% interval")

@dataclass
class SeriesForecast:
    """What one series' figure shows; every array is aligned with its index."""

    index: int
    start: str  # the record's `start`, as written in the channel
    source: str  # file:line of the record the forecast was made from
    observed_index: pd.DatetimeIndex  # the shown observed points
    observed: np.ndarray  # history tail + held-out truth (NaN where missing)
    forecast_index: pd.DatetimeIndex  # prediction_length timestamps
    quantiles: Dict[float, np.ndarray]  # 0.1, 0.5, 0.9 -> prediction_length values
    truth: np.ndarray  # the held-out observed points, NaN past the end of the data

    @property
    def p10(self) -> np.ndarray:
        return self.quantiles[0.1]

    @property
    def p50(self) -> np.ndarray:
        return self.quantiles[0.5]

    @property
    def p90(self) -> np.ndarray:
        return self.quantiles[0.9]

    def as_dict(self) -> Dict[str, Any]:
        return {
            "index": self.index,
            "start": self.start,
            "source": self.source,
            "forecast_start": _stamp(self.forecast_index[0]),
            "timestamps": [_stamp(t) for t in self.forecast_index],
            "p10": _floats(self.p10),
            "p50": _floats(self.p50),
            "p90": _floats(self.p90),
            "truth": _floats(self.truth),
        }


@dataclass
class PlotResult:
    """What `plot` wrote."""

    series: List[SeriesForecast]
    series_files: List[Path]
    grid_file: Path
    json_file: Path
    grid_series: List[int] = field(default_factory=list)  # the indices the grid shows

    @property
    def files(self) -> List[Path]:
        return [*self.series_files, self.grid_file, self.json_file]


def _stamp(value: Any) -> str:
    return pd.Timestamp(value).strftime("%Y-%m-%d %H:%M:%S")


def _floats(values: np.ndarray) -> List[Optional[float]]:
    return [None if not math.isfinite(v) else v for v in np.asarray(values, float).tolist()]


# --------------------------------------------------------------------------- data


def _read_series(channel: Path, wanted: Optional[Sequence[int]], what: str
            ) -> tuple[Dict[int, Any], int]:
    """Read a channel, keeping only the wanted records; return them and the series count."""
    from deepar_cli.data.channels import read_channel

    keep = None if wanted is None else set(wanted)
    chosen: Dict[int, Any] = {}
    count = 0
    for index, record in enumerate(read_channel(channel)):
        count = index + 1
        if keep is None:
            if index < DEFAULT_SERIES:
                chosen[index] = record
        elif index in keep:
            chosen[index] = record
    if keep is not None:
        missing = [i for i in wanted or () if i not in chosen]
        if missing:
            raise DataError(
                f"{channel}: no series {missing[0]}; the {what} channel has {count} series "
                f"(indices 0-{count - 1})"
            )
    return chosen, count


def _timestamps(start: pd.Period, begin: int, end: int) -> pd.DatetimeIndex:
    return pd.period_range(start + begin, periods=end - begin, freq=start.freq).to_timestamp()


def forecast_series(model: Model, test_channel: Path,
                    series: Optional[Sequence[int]] = None, *,
                    train_channel: Optional[Path] = None, seed: int = DEFAULT_SEED,
                    num_samples: Optional[int] = None) -> List[SeriesForecast]:
    """Forecast the chosen series' last `prediction_length` points and return what to draw.

    `series`: 0-based indices, in the order to draw them (None: the first five). Forecasts
    go through the one forecast path, so each equals what `predict` and `evaluate` give
    for the same series and seed.
    """
    from deepar_cli.data.dataset import to_entry
    from deepar_cli.model.forecasting import hold_out, sample_paths, summarize

    hp = model.hp
    wanted = None if series is None else list(dict.fromkeys(series))
    if wanted is not None and not wanted:
        raise UsageError("no series to plot")
    num_samples = hp.num_eval_samples if num_samples is None else num_samples
    tests, _ = _read_series(test_channel, wanted, "test")
    trains = _read_series(train_channel, wanted, "train")[0] if train_channel is not None else None
    order = wanted if wanted is not None else sorted(tests)
    pl, shown = hp.prediction_length, hp.context_length

    entries, views = [], []
    for index in order:
        test = tests[index]
        if trains is None:
            if test.target.size <= pl:
                raise DataError(
                    f"{test.source}: series {index} has {test.target.size} points; it must be "
                    f"longer than prediction_length ({pl}) to hold out its last points"
                )
            cut = test.target.size - pl
            entry = hold_out(to_entry(test, hp.freq, model.features, where=test.source), pl)
            history, source = test.target[:cut], test.source
        else:
            train = trains[index]
            if pd.Period(train.start, freq=hp.freq) != pd.Period(test.start, freq=hp.freq):
                raise DataError(
                    f"{train.source}: series {index} starts at {train.start} in the train "
                    f"channel but at {test.start} in the test channel"
                )
            cut = train.target.size
            if test.target.size <= cut:
                raise DataError(
                    f"{test.source}: series {index} has {test.target.size} points in the test "
                    f"channel and {cut} in the train channel; the test record must be longer "
                    "to show the truth"
                )
            entry = to_entry(train, hp.freq, model.features, where=train.source)
            if model.features.num_dynamic_feat:
                if test.dynamic_feat is None or test.dynamic_feat.shape[1] < cut + pl:
                    raise DataError(
                        f"{test.source}: series {index} needs dynamic_feat for "
                        f"{cut + pl} points (train length + prediction_length) to forecast"
                    )
                entry["feat_dynamic_real"] = test.dynamic_feat[:, :cut + pl].astype(np.float32)
            history, source = train.target, train.source
        entries.append(entry)
        views.append((index, test, cut, history, source))

    out = []
    forecasts = sample_paths(model.predictor, entries, num_samples=num_samples, seed=seed)
    for (index, test, cut, history, source), forecast in zip(views, forecasts):
        truth = np.full(pl, np.nan)
        held = test.target[cut:cut + pl]
        truth[:held.size] = held
        begin = max(0, cut - shown)
        summary = summarize(forecast.samples, QUANTILES)
        out.append(SeriesForecast(
            index=index,
            start=test.start,
            source=source,
            observed_index=_timestamps(pd.Period(test.start, freq=hp.freq), begin,
                                       cut + held.size),
            observed=np.concatenate([history[begin:], held]).astype(float),
            forecast_index=forecast.index.to_timestamp(),
            quantiles={q: np.asarray(values, dtype=float)
                       for q, values in summary.quantiles.items()},
            truth=truth,
        ))
    return out


# --------------------------------------------------------------------------- drawing


def title(item: SeriesForecast) -> str:
    return f"series {item.index} (start {item.start})"


def _draw(ax: Any, item: SeriesForecast, *, fontsize: float = 10) -> None:
    import matplotlib.dates as mdates

    ax.fill_between(item.forecast_index, item.p10, item.p90, color=FORECAST_COLOR,
                    alpha=0.25, linewidth=0, label=LABELS[2])
    ax.plot(item.observed_index, item.observed, color=OBSERVED_COLOR, linewidth=1.2,
            label=LABELS[0])
    ax.plot(item.forecast_index, item.p50, color=FORECAST_COLOR, linewidth=1.6,
            label=LABELS[1])
    ax.axvline(item.forecast_index[0], color="#888888", linewidth=0.8, linestyle=":")
    locator = mdates.AutoDateLocator(minticks=4, maxticks=9)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlim(item.observed_index[0], max(item.observed_index[-1], item.forecast_index[-1]))
    ax.set_title(title(item), fontsize=fontsize + 1, loc="left")
    ax.tick_params(labelsize=fontsize - 1)
    ax.grid(True, color="#e5e5e5", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _legend(fig: Any, ax: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    order = [labels.index(name) for name in LABELS]
    fig.legend([handles[i] for i in order], [labels[i] for i in order],
               loc="outside upper right", ncols=3, frameon=False, fontsize=9)


def series_figure(item: SeriesForecast) -> Any:
    """One series, 10 x 4 in at 100 dpi (1000 x 400 px)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=SERIES_SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    _draw(ax, item)
    ax.set_ylabel("target")
    _legend(fig, ax)
    return fig


def grid_shape(count: int) -> tuple[int, int]:
    """(rows, columns): one column up to five series, then two, then three."""
    columns = 1 if count <= 5 else 2 if count <= 12 else 3
    return math.ceil(count / columns), columns


def grid_figure(items: Sequence[SeriesForecast]) -> Any:
    """Every series in one figure, 3 in per row, 10 in wide per column (8 past one)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows, columns = grid_shape(len(items))
    width = 10.0 if columns == 1 else 8.0 * columns
    fig = Figure(figsize=(width, 0.5 + 3.0 * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax, item in zip(axes.flat, items):
        _draw(ax, item, fontsize=9)
    for ax in list(axes.flat)[len(items):]:
        ax.set_visible(False)
    _legend(fig, axes.flat[0])
    return fig


def save_png(fig: Any, path: Path) -> None:
    """Write a figure atomically (the temporary name ends in .tmp, hence format=png)."""
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


# --------------------------------------------------------------------------- the command


def plot(model: Model, test_channel: Path, output_dir: Path, *,
         series: Optional[Sequence[int]] = None, train_channel: Optional[Path] = None,
         seed: int = DEFAULT_SEED, num_samples: Optional[int] = None) -> PlotResult:
    """Forecast, draw `series-<i>.png` per series and `forecasts.png`, write `plot.json`."""
    items = forecast_series(model, test_channel, series, train_channel=train_channel,
                            seed=seed, num_samples=num_samples)
    make_output_dir(output_dir)
    num_samples = model.hp.num_eval_samples if num_samples is None else num_samples
    files = []
    for item in items:
        path = output_dir / f"series-{item.index}.png"
        save_png(series_figure(item), path)
        files.append(path)
    shown = items[:GRID_LIMIT]
    grid = output_dir / GRID_FILE
    save_png(grid_figure(shown), grid)
    json_path = output_dir / JSON_FILE
    write_json(json_path, {
        "model_dir": str(model.path),
        "test": str(test_channel),
        "train": None if train_channel is None else str(train_channel),
        "seed": seed,
        "num_samples": num_samples,
        "freq": model.hp.time_freq,
        "context_length": model.hp.context_length,
        "prediction_length": model.hp.prediction_length,
        "quantiles": list(QUANTILES),
        "grid": GRID_FILE,
        "series": [dict(item.as_dict(), file=path.name) for item, path in zip(items, files)],
    })
    return PlotResult(items, files, grid, json_path, [item.index for item in shown])


def describe(result: PlotResult) -> Iterable[str]:
    """The lines the CLI prints: one per file written."""
    for item, path in zip(result.series, result.series_files):
        yield f"wrote {path} (series {item.index}, start {item.start})"
    note = ("" if len(result.grid_series) == len(result.series)
            else f", the first {len(result.grid_series)} of {len(result.series)}")
    yield f"wrote {result.grid_file} ({len(result.grid_series)} series{note})"
    yield f"wrote {result.json_file} (p10/p50/p90 per series)"
