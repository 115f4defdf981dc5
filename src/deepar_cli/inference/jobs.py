"""What a batch transform works on: file jobs (`plan`) and their shards (`read_shards`).

`--input` is a file or a folder of `.json`, `.jsonl` or `.json.gz` files. With a folder,
`--output` is a folder that receives one `<name>.out` per input file (SageMaker's naming:
`part-0.jsonl` -> `part-0.jsonl.out`, sub-folders kept). Engines that spread the work over
workers cut each file into shards of consecutive lines; since a record's forecast depends
on the model, the record and the seed only, the shards' outputs put end to end are the
single-process output, byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator, List

from deepar_cli.data.channels import gzip_errors
from deepar_cli.errors import DataError, UsageError
from deepar_cli.inference.protocol import looks_like_request, open_input

SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")
OUTPUT_SUFFIX = ".out"


@dataclass(frozen=True)
class FileJob:
    """One input file and the file its predictions go to ("-": stdin or stdout)."""

    source: str
    target: str


@dataclass(frozen=True)
class Shard:
    """Consecutive lines of one job's input: `data` starts at line `first_line` of
    `name`. `whole` shards are a whole file read as `predict` reads one (an endpoint
    request, or a file with no record); `last` is the job's final shard."""

    job: int
    index: int
    name: str
    first_line: int
    data: bytes
    whole: bool
    last: bool


def plan(input_path: Path, output_path: Path) -> List[FileJob]:
    """The jobs of a batch transform: the file itself, or each data file of a folder
    (sorted, hidden names and `_SUCCESS` skipped, as for channels) with its `.out` file
    under `output_path`. Raises UsageError, DataError or OutputError before any work."""
    from deepar_cli.atomic import prepare_dir, prepare_file, refuse_overlap
    from deepar_cli.data.channels import channel_files

    if str(output_path) != "-":
        refuse_overlap(output_path, [input_path], "--output", replaced=False)
    if str(input_path) == "-" or not input_path.is_dir():
        if str(output_path) != "-":
            prepare_file(output_path)
        return [FileJob(str(input_path), str(output_path))]
    if str(output_path) == "-":
        raise UsageError(f"{input_path} is a folder: --output must be a folder too (one "
                         f"<name>{OUTPUT_SUFFIX} per input file), not -")
    prepare_dir(output_path)
    files = channel_files(input_path)
    other = [f for f in files if not f.name.endswith(SUFFIXES)]
    if other:
        raise DataError(f"{other[0]}: predict reads JSON Lines ({', '.join(SUFFIXES)}), "
                        "not Parquet")
    return [FileJob(str(f), str(output_path / f.relative_to(input_path).parent /
                            (f.name + OUTPUT_SUFFIX)))
            for f in files]


def read_shards(jobs: List[FileJob], shard_lines: int) -> Iterator[Shard]:
    """Stream the jobs' inputs as shards of at most `shard_lines` records each (blank
    lines ride along with the record before them)."""
    for number, job in enumerate(jobs):
        with open_input(job.source) as source, gzip_errors(job.source):
            yield from _file_shards(number, job.source, source, shard_lines)


def _file_shards(job: int, name: str, source: IO[bytes], size: int) -> Iterator[Shard]:
    head: List[bytes] = []
    for line in source:
        head.append(line)
        if line.strip():
            break
    if not head or not head[-1].strip() or looks_like_request(head[-1]):
        yield Shard(job, 0, name, 1, b"".join(head) + source.read(), whole=True, last=True)
        return
    lines, records, first_line, index = head, 1, 1, 0
    for number, line in enumerate(source, start=len(head) + 1):
        if line.strip():
            if records == size:
                yield Shard(job, index, name, first_line, b"".join(lines), False, False)
                lines, records, first_line, index = [], 0, number, index + 1
            records += 1
        lines.append(line)
    yield Shard(job, index, name, first_line, b"".join(lines), False, True)
