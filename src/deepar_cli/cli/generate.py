"""`deepar-cli generate`: the SageMaker notebook's synthetic channels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from deepar_cli.cli.options import PathType


@click.command()
@click.option("--output-dir", type=PathType, default=Path("data"), show_default=True,
              help="Folder for train and test files.")
@click.option("--num-series", type=click.IntRange(1), default=200, show_default=True)
@click.option("--length", type=click.IntRange(2), default=400, show_default=True,
              help="Points per full (test) series.")
@click.option("--period", type=click.IntRange(1), default=24, show_default=True,
              help="Seasonal period.")
@click.option("--freq", default="H", show_default=True, help="SageMaker time_freq.")
@click.option("--start", default="2016-01-01 00:00:00", show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=1, show_default=True,
              help="np.random.seed value.")
@click.option("--prediction-length", type=click.IntRange(1), default=48, show_default=True,
              help="Points held out of train.")
@click.option("--format", "fmt", type=click.Choice(["json", "jsonl", "json.gz", "parquet"]),
              default="json", show_default=True)
@click.option("--num-categories", type=click.IntRange(0), default=0, show_default=True,
              help="Add a `cat` field: series k gets group k mod N (0 = no field).")
@click.option("--num-dynamic-feat", type=click.IntRange(0), default=0, show_default=True,
              help="Add N seasonal `dynamic_feat` series (0 = no field).")
def generate(output_dir: Path, fmt: str, **options: Any) -> None:
    """Write the SageMaker notebook's synthetic train and test channels."""
    from deepar_cli.data.channels import output_suffix, write_records
    from deepar_cli.data.synthetic import SyntheticSpec
    from deepar_cli.data.synthetic import generate as make

    train, test = make(SyntheticSpec(**options))
    suffix = output_suffix(fmt)
    for name, records in (("train", train), ("test", test)):
        path = output_dir / f"{name}{suffix}"
        count = write_records(path, records)
        click.echo(f"wrote {path} ({count} series, {records[0].target.size} points each)")
