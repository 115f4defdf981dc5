"""Atomic outputs: build under a temporary name beside the target, then rename.

A write that fails (an existing file where a folder is wanted, a folder that cannot be
written, a full disk) raises OutputError naming the target and leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import AbstractSet, Any, Iterable, Iterator

from deepar_cli.errors import OutputError, UsageError

# mkstemp/mkdtemp create private (0600/0700) entries; finished outputs get the usual modes.
_UMASK = os.umask(0)
os.umask(_UMASK)


def _failure(path: Path, exc: OSError) -> OutputError:
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
    return OutputError(f"{path}: cannot be written ({exc.strerror or exc}{where})")


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _failure(path, exc) from None


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it becomes `path` only if the block succeeds."""
    _make_parent(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _failure(path, exc) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    except OSError as exc:
        raise _failure(path, exc) from None
    finally:
        tmp_path.unlink(missing_ok=True)


def prepare_dir(path: Path, *, replace: bool = False) -> None:
    """Check, creating nothing, that a folder can be made at `path`: no file is in the way
    of it or of a folder above it; with `replace`, that `atomic_dir(path)` can swap its
    result in, which no folder that is the current one or above it allows (UsageError).
    Lets long work fail before it starts."""
    if replace:
        here = Path.cwd()
        target = path.resolve()
        if target == here or target in here.parents:
            raise UsageError(f"{path}: the current folder, or one above it, cannot be replaced "
                             f"by a new folder; give a folder of its own, e.g. {path / 'model'}")
    for place in (path, *path.parents):
        if place.exists():
            if not place.is_dir():
                raise OutputError(f"{path}: cannot be written ({place} is a file, not a "
                                  "folder)")
            if not os.access(place, os.W_OK | os.X_OK):
                raise OutputError(f"{path}: cannot be written ({place} is not writable)")
            return


def prepare_file(path: Path) -> None:
    """Check, creating nothing, that `atomic_file(path)` can place its result: `path` is not
    a folder, and `prepare_dir` holds for its folder. Lets long work fail before it starts."""
    if path.is_dir():
        raise OutputError(f"{path}: cannot be written (it is a folder)")
    prepare_dir(path.parent)


def refuse_overlap(output: Path, inputs: Iterable[Any], option: str, *,
                   replaced: bool) -> None:
    """UsageError if the output `option` names is one of the `inputs` paths or lies inside
    one; with `replaced` (the output replaces its path whole) also if it holds one. Inputs
    that are not paths (None, "-", datasets) are skipped."""
    target = output.resolve()
    for source in inputs:
        if not isinstance(source, (str, os.PathLike)) or str(source) == "-":
            continue
        place = Path(source).resolve()
        relation = "is" if target == place else "lies inside" if place in target.parents \
            else "holds" if replaced and target in place.parents else None
        if relation:
            raise UsageError(f"{option} {output} {relation} the input {source}; write the "
                             "output somewhere else")


def refuse_foreign_dir(path: Path, entries: AbstractSet[str], kind: str) -> None:
    """OutputError if `path` is a folder that holds anything but the `entries` deepar-cli
    writes into a `kind` (and its own temporary `.NAME.*.tmp` files): a command that
    replaces or writes into such a folder never destroys what it did not write."""
    if not path.is_dir():
        return
    for entry in sorted(path.iterdir()):
        name = entry.name
        if not (name in entries or name.endswith(".tmp") and any(
                name.startswith(f".{known}.") for known in entries)):
            raise OutputError(f"{path}: exists and is not a deepar-cli {kind} (it holds "
                              f"{name}); give a new or empty folder")


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; it replaces `path` only if the block succeeds."""
    prepare_dir(path, replace=True)
    _make_parent(path)
    try:
        tmp_path = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp",
                                         dir=path.parent))
    except OSError as exc:
        raise _failure(path, exc) from None
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o777 & ~_UMASK)
        if path.exists():
            # A name of our own for the replaced folder, never one a user's file may have.
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old.tmp",
                                        dir=path.parent))
            os.replace(path, old)
            os.replace(tmp_path, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp_path, path)
    except OSError as exc:
        raise _failure(path, exc) from None
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def make_output_dir(path: Path) -> None:
    """Create a folder for outputs, or raise OutputError (e.g. a file of that name)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _failure(path, exc) from None


def write_json(path: Path, data: Any) -> None:
    """The one JSON writer for outputs: atomic, indented, NaN and infinity as null, numpy
    scalars and arrays as numbers and lists."""
    text = json.dumps(_plain(data), indent=2, allow_nan=False)
    with atomic_file(path) as tmp:
        tmp.write_text(text + "\n")


def _plain(value: Any) -> Any:
    import numpy as np

    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
