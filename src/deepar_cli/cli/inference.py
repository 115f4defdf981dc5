"""`deepar-cli predict` (batch transform) and `serve` (the endpoint): SageMaker's inference
protocol, the same bytes from both."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Optional, Tuple

import click

from deepar_cli.cli.options import (
    InferenceConfigParam,
    NumSamples,
    OutputTypesParam,
    PathType,
    QuantilesParam,
    load_model,
    max_memory_option,
    quiet_option,
    seed_option,
)
from deepar_cli.errors import DeepARCliError, UsageError


def _inference_config(config: Any, overrides: dict) -> Tuple[Any, bool]:
    """--config (else $DEEPAR_INFERENCE_CONFIG, else SageMaker's defaults) with single
    options on top; and whether the user configured anything on the command line."""
    from deepar_cli.inference.protocol import config_from_environment

    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        base = config if config is not None else config_from_environment()
        return dataclasses.replace(base, **given), config is not None or bool(given)
    except DeepARCliError as error:  # the environment's configuration: a usage error
        raise UsageError(str(error)) from None


@click.command()
@click.option("--model-dir", type=PathType, required=True)
@click.option("--input", "input_path", type=click.Path(path_type=Path, allow_dash=True,
                                                       exists=True),
              required=True, help="JSON Lines of records (.json, .jsonl, .json.gz), one "
                                  "endpoint request, or a folder of such files; - for stdin.")
@click.option("--output", "output_path", type=click.Path(path_type=Path, allow_dash=True),
              required=True, help="Where predictions go; - for stdout. For a folder --input, "
                                  "a folder receiving one <name>.out per input file.")
@click.option("--config", type=InferenceConfigParam(), default=None,
              help="Inference configuration as JSON (default: $DEEPAR_INFERENCE_CONFIG).")
@click.option("--num-samples", type=NumSamples, default=None)
@click.option("--output-types", type=OutputTypesParam(), default=None,
              help='e.g. "mean,quantiles,samples".')
@click.option("--quantiles", type=QuantilesParam(), default=None, help='e.g. "0.1,0.5,0.9".')
@seed_option()
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="local: this process; ray: Ray actors, on a local Ray "
                                      "or the cluster at --address (same bytes).")
@click.option("--address", metavar="HOST:PORT",
              help="Ray cluster to join (as `ray start --head` prints it); default: start a "
                   "local Ray.")
@click.option("--workers", type=click.IntRange(1, 100_000), default=None,
              help="Ray workers (default: one per --worker-cpus CPUs of the cluster).")
@click.option("--worker-cpus", type=click.IntRange(1, 1024), default=None,
              help="CPUs, and threads, per Ray worker.  [default: 1]")
@click.option("--shard-lines", type=click.IntRange(1), default=None,
              help="Records per shard handed to a Ray worker.  [default: 1000]")
@quiet_option()
@max_memory_option
def predict(model_dir: Path, input_path: Path, output_path: Path, config: Any,
            num_samples: Optional[int], output_types: Optional[Tuple[str, ...]],
            quantiles: Optional[Tuple[str, ...]], seed: int, engine: str,
            address: Optional[str], workers: Optional[int], worker_cpus: Optional[int],
            shard_lines: Optional[int], quiet: bool) -> None:
    """Batch transform: SageMaker DeepAR records in, prediction objects out.

    A folder in gives a folder out, one <name>.out per input file, as SageMaker's batch
    transform writes them.
    """
    from deepar_cli.inference.batch import transform

    config, given = _inference_config(config, {"num_samples": num_samples,
                                               "output_types": output_types,
                                               "quantiles": quantiles})
    ray_given = {k: v for k, v in {"address": address, "workers": workers,
                                   "worker_cpus": worker_cpus,
                                   "shard_lines": shard_lines}.items() if v is not None}
    options = None
    if engine == "ray":
        from deepar_cli.inference.ray_engine import RayOptions, check

        options = RayOptions(**ray_given)
        check(options)  # before the model loads: Ray installed, the address answering
    elif ray_given:
        raise UsageError(f"--{next(iter(ray_given)).replace('_', '-')} applies to --engine "
                         "ray only")
    count, files = transform(load_model(model_dir), input_path, output_path, config,
                             seed=seed, config_given=given, ray=options,
                             progress=not quiet and sys.stderr.isatty() and engine == "local")
    if str(output_path) != "-":
        where = f"{files} files in {output_path}" if input_path.is_dir() else output_path
        click.echo(f"wrote {count} predictions to {where}")


@click.command()
@click.option("--model-dir", type=PathType, required=True, help="A model folder from `train`.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Forecasting processes; each loads the model and answers one request at "
                   "a time.")
@click.option("--timeout", type=click.IntRange(1, 3600), default=60, show_default=True,
              help="Seconds a request may wait for a worker, and then run on it (SageMaker: "
                   "60); past either the client gets 504, and a worker over it is replaced.")
@click.option("--read-timeout", type=click.FloatRange(0.1, 3600), default=10.0,
              show_default=True, help="Seconds for a request's headers, and again for its "
                                      "body, to arrive; past it 408.")
@click.option("--keep-alive", type=click.FloatRange(0, 3600), default=5.0, show_default=True,
              help="Seconds an idle keep-alive connection stays open (above a load "
                   "balancer's idle timeout, if behind one).")
@seed_option("Every request is forecast from this seed, as `predict --seed` does.")
@click.option("--max-payload-mb", type=click.FloatRange(0, 1024, min_open=True), default=6.0,
              show_default=True, help="Larger request bodies get 413 (SageMaker: 6 MB).")
@click.option("--max-connections", type=click.IntRange(1, 100_000), default=1000,
              show_default=True, help="Open connections; past it 503 with Retry-After.")
@click.option("--max-queue", type=click.IntRange(1, 100_000), default=128, show_default=True,
              help="Requests waiting for a worker; past it 503 with Retry-After.")
@click.option("--max-buffer-mb", type=click.FloatRange(1, 1 << 20), default=256.0,
              show_default=True, help="Request bodies held in memory at once (being read or "
                                      "queued); past it 503 with Retry-After.")
@max_memory_option
def serve(model_dir: Path, host: str, port: int, workers: int, timeout: int,
          read_timeout: float, keep_alive: float, seed: int, max_payload_mb: float,
          max_connections: int, max_queue: int, max_buffer_mb: float) -> None:
    """The endpoint: SageMaker's DeepAR GET /ping and POST /invocations over HTTP.

    JSON requests ({"instances": [...], "configuration": {...}}) and JSON Lines of
    records (configuration from $DEEPAR_INFERENCE_CONFIG) are answered byte for byte as
    `predict` answers them. Stops gracefully on SIGTERM or Ctrl-C.
    """
    from deepar_cli.serve.serving import serve as run

    lines_config, _ = _inference_config(None, {})
    run(model_dir, lines_config=lines_config, host=host, port=port, workers=workers,
        seed=seed, timeout=timeout, read_timeout=read_timeout, keep_alive=keep_alive,
        max_payload_mb=max_payload_mb, max_connections=max_connections,
        max_queue=max_queue, max_buffer_mb=max_buffer_mb)
