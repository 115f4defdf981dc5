"""Training events -> SageMaker-style log lines or JSON lines."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, Any, Dict, Optional

from deepar_cli.data.stats import summary_lines
from deepar_cli.errors import OutputError
from deepar_cli.tune.events import EVENTS, describe_event


def format_event(event: str, figures: Dict[str, Any]) -> Optional[str]:
    """One event as the text SageMaker's DeepAR log would show, or None to stay silent."""
    if event == "dataset":
        head = f"[{figures['channel']} channel]"
        return "\n".join(f"{head} {line}" for line in summary_lines(figures))
    if event == "hyperparameters":
        return "hyperparameters: " + ", ".join(f"{k}={v}" for k, v in figures.items())
    if event == "plan":
        passes = figures["passes"]
        reading = ("about one pass over" if passes == 1 else
                   f"small data set: {passes} passes over")
        return (f"an epoch is {figures['batches_per_epoch']} batches of "
                f"{figures['mini_batch_size']} ({reading} {figures['training_windows']} "
                f"training windows); {figures['epochs']} epochs")
    if event == "epoch":
        best = ", best epoch loss so far" if figures["best"] else ""
        return (f"#epoch {figures['epoch']}: loss={figures['loss']:.6g} "
                f"({figures['samples_per_second']} samples/s, {figures['seconds']} s){best}")
    if event == "early_stopping":
        return (f"early stopping: no improvement for {figures['patience']} epochs; "
                f"keeping the model of epoch {figures['best_epoch']}")
    if event == "final":
        return (f"#final loss: {figures['final_loss']:.6g} (epoch {figures['best_epoch']}; "
                f"{figures['epochs_run']} epochs in {figures['train_seconds']} s, "
                f"{figures['train_samples_per_second']} samples/s)")
    if event == "test_metrics":
        scores = [f"#test_score ({name}): {value:.6g}" for name, value in figures.items()
                  if not name.startswith("Coverage")]
        coverage = [f"{name[9:-1]}: {value:.3g}" for name, value in figures.items()
                    if name.startswith("Coverage")]
        return "\n".join(scores + ["coverage (share of the truth below each quantile): "
                                   + ", ".join(coverage)] * bool(coverage))
    if event in EVENTS:
        return describe_event(event, figures)
    return None


class Reporter:
    """Writes each event as text or JSON to a stream, and as JSON to an optional log file."""

    def __init__(self, fmt: str = "text", stream: Optional[IO[str]] = None,
                 log_file: Optional[Path] = None) -> None:
        self.fmt = fmt
        self.stream = stream or sys.stdout
        self.log_file = None
        if log_file:
            try:
                log_file.parent.mkdir(parents=True, exist_ok=True)
                self.log_file = open(log_file, "w")
            except OSError as exc:
                raise OutputError(
                    f"{log_file}: cannot write the log file ({exc.strerror})"
                ) from None

    def __call__(self, event: str, figures: Dict[str, Any]) -> None:
        line = json.dumps({"event": event, **figures}, default=str)
        if self.log_file:
            self.log_file.write(line + "\n")
            self.log_file.flush()
        text = line if self.fmt == "json" else format_event(event, figures)
        if text is not None:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.log_file:
            self.log_file.close()

    def __enter__(self) -> "Reporter":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
