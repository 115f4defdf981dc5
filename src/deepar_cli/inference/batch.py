"""Batch transform over files and folders, as SageMaker's batch transform runs it, and the
one place that picks its engine.

`plan` (deepar_cli.inference.jobs) turns `--input` and `--output` into file jobs; an
`Engine` runs them: `LocalEngine` one after another in this process, `RayEngine`
(deepar_cli.inference.ray_engine) on Ray actors. Each job's output is written atomically,
its lines in the order of the input's records, and every engine writes the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Protocol, Tuple

from deepar_cli.inference.jobs import FileJob, plan
from deepar_cli.inference.protocol import InferenceConfig, run_batch_transform
from deepar_cli.model.modelfolder import Model

if TYPE_CHECKING:
    from deepar_cli.inference.ray_engine import RayOptions


class Engine(Protocol):
    """Runs a batch transform's file jobs; returns the predictions written. A job's output
    appears complete or not at all."""

    def run(self, model: Model, jobs: List[FileJob], config: InferenceConfig, *, seed: int,
            config_given: bool) -> int: ...


@dataclass(frozen=True)
class LocalEngine:
    """The jobs one after another in this process; `progress` draws a bar on stderr."""

    progress: bool = False

    def run(self, model: Model, jobs: List[FileJob], config: InferenceConfig, *, seed: int,
            config_given: bool) -> int:
        return sum(run_batch_transform(model, job.source, job.target, config, seed=seed,
                                       config_given=config_given, progress=self.progress)
                   for job in jobs)


def make_engine(ray: Optional[RayOptions] = None, *, progress: bool = False) -> Engine:
    """The local engine, or given `ray` options the Ray engine."""
    if ray is None:
        return LocalEngine(progress)
    from deepar_cli.inference.ray_engine import RayEngine

    return RayEngine(ray)


def transform(model: Model, input_path: Path, output_path: Path, config: InferenceConfig,
              *, seed: int, config_given: bool = False, progress: bool = False,
              ray: Optional[RayOptions] = None) -> Tuple[int, int]:
    """`deepar-cli predict`: plan the jobs and run them in this process or, given `ray`
    options, on a Ray cluster. Returns the predictions and the files written."""
    jobs = plan(input_path, output_path)
    engine = make_engine(ray, progress=progress)
    return engine.run(model, jobs, config, seed=seed, config_given=config_given), len(jobs)
