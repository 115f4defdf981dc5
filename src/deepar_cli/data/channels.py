"""SageMaker DeepAR channels: find their files, stream validated records, write records.

A channel is a file or a folder of `.json`, `.jsonl`, `.json.gz` or `.parquet` files
holding one record per line (or row).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import zlib
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional

import orjson

from deepar_cli import jsontext
from deepar_cli.atomic import atomic_file
from deepar_cli.data.records import Record, parse_record
from deepar_cli.errors import DataError

SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz", ".parquet")


# --------------------------------------------------------------------------- reading


def channel_files(channel: Path) -> List[Path]:
    """The data files of a channel: the file itself, or a folder's data files sorted by name,
    skipping hidden names and `_SUCCESS` markers as SageMaker does."""
    if not channel.exists():
        raise DataError(f"{channel}: no such file or folder")
    if channel.is_file():
        return [channel]
    files = sorted(
        p
        for p in channel.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(channel).parts)
        and p.name != "_SUCCESS"
        and p.name.endswith(SUFFIXES)
    )
    if not files:
        raise DataError(f"{channel}: the channel holds no {'/'.join(SUFFIXES)} files")
    return files


def _raw_objects(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed object) for each non-blank line or Parquet row."""
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            table = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
        row = 0
        for batch in table.iter_batches(batch_size=512):
            for obj in batch.to_pylist():
                row += 1
                yield row, {k: v for k, v in obj.items() if v is not None}
        return
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle, gzip_errors(str(path)):
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield number, jsontext.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{number}: not valid JSON ({exc})") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None


@contextlib.contextmanager
def gzip_errors(name: str) -> Iterator[None]:
    """A broken `.gz` input is bad data, whichever layer notices (gzip's header check,
    zlib's inflate, the end of the stream), and not an OSError, which would read as an
    output that cannot be written. Every reader of `.gz` input reads inside this."""
    try:
        yield
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{name}: not a readable gzip file ({exc})") from None


def check_consistency(record: Record, first: Record, where: str) -> None:
    """Every record of a channel has the same `cat` count and `dynamic_feat` count."""
    for name, mine, theirs in (
        ("cat", record.cat, first.cat),
        ("dynamic_feat", record.dynamic_feat, first.dynamic_feat),
    ):
        mine_n = None if mine is None else len(mine)
        theirs_n = None if theirs is None else len(theirs)
        if mine_n != theirs_n:
            have = "no" if mine_n is None else str(mine_n)
            want = "none" if theirs_n is None else str(theirs_n)
            raise DataError(
                f'{where}: "{name}" has {have} values here but {want} in the first record '
                f"({first.source}); every record must have the same count"
            )


def read_channel(channel: Path, *, extra_feat_length: int = 0) -> Iterator[Record]:
    """Stream the validated records of a channel, one at a time.

    Raises DataError ("file:line: message") on the first bad record, and when the channel
    holds no record at all.
    """
    first: Optional[Record] = None
    for path in channel_files(channel):
        for number, obj in _raw_objects(path):
            where = f"{path}:{number}"
            try:
                record = parse_record(obj, extra_feat_length=extra_feat_length)
            except ValueError as exc:
                raise DataError(f"{where}: {exc}") from None
            record.source = where
            if first is None:
                first = record
            else:
                check_consistency(record, first, where)
            yield record
    if first is None:
        raise DataError(f"{channel}: the channel is empty (no records)")


# --------------------------------------------------------------------------- writing


def output_suffix(fmt: str) -> str:
    """The file ending for an output format name (json, jsonl, json.gz, parquet)."""
    suffix = "." + fmt.lstrip(".")
    if suffix not in SUFFIXES:
        raise DataError(f'unknown format "{fmt}"; valid: json, jsonl, json.gz, parquet')
    return suffix


def write_records(path: Path, records: Iterable[Record]) -> int:
    """Write records atomically in the format the file name asks for; return the count."""
    count = 0
    with atomic_file(path) as tmp:
        if path.name.endswith(".parquet"):
            import pyarrow as pa
            import pyarrow.parquet as pq

            rows = [_parquet_row(r) for r in records]
            pq.write_table(pa.Table.from_pylist(rows), tmp)
            count = len(rows)
        else:
            opener = gzip.open if path.name.endswith(".gz") else open
            with opener(tmp, "wb") as handle:
                for record in records:
                    handle.write(orjson.dumps(record.to_json()) + b"\n")
                    count += 1
    return count


def _parquet_row(record: Record) -> Dict[str, Any]:
    row: Dict[str, Any] = {"start": record.start, "target": record.target.tolist()}
    if record.cat is not None:
        row["cat"] = list(record.cat)
    if record.dynamic_feat is not None:
        row["dynamic_feat"] = record.dynamic_feat.tolist()
    return row
