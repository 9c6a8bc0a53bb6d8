"""Loaders for the shared data layout: one folder per dataset, JSONL splits, labels.json.

The data directory comes from ``--data-dir``, else ``$PEFTBENCH_DATA_DIR``, else ``./data``,
else ``../shared/data`` beside the working directory or the repository. A missing dataset is
an error that lists every place looked at.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.errors import BenchError, did_you_mean

DATA_ENV = "PEFTBENCH_DATA_DIR"
_REPO = Path(__file__).resolve().parents[2]


def data_dir_candidates(explicit: str | Path | None = None) -> list[Path]:
    """The data directories to try, in order."""
    if explicit:
        return [Path(explicit)]
    found = [Path(os.environ[DATA_ENV])] if os.environ.get(DATA_ENV) else []
    found += [Path.cwd() / "data", Path.cwd().parent / "shared" / "data", _REPO.parent / "shared" / "data"]
    unique: list[Path] = []
    for path in found:
        if path.resolve() not in [u.resolve() for u in unique]:
            unique.append(path)
    return unique


def resolve_data_dir(explicit: str | Path | None = None) -> Path:
    """The first existing data directory.

    Raises:
        BenchError: naming every place looked at.
    """
    tried = data_dir_candidates(explicit)
    for path in tried:
        if path.is_dir():
            return path
    where = ", ".join(str(p) for p in tried)
    raise BenchError(f"no data directory found (looked in: {where}); pass --data-dir or set {DATA_ENV}")


def dataset_names(data_dir: Path) -> list[str]:
    """Dataset folders under ``data_dir``."""
    return sorted(p.name for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def find_dataset(name: str, data_dir: Path) -> Path:
    """A dataset folder: a path as given, or ``name`` under the data dir."""
    path = Path(name)
    if path.is_absolute() or name.startswith("."):
        if path.is_dir():
            return path
        raise BenchError(f"dataset folder {path} does not exist")
    folder = data_dir / name
    if folder.is_dir():
        return folder
    from bench.data import hub

    if hub.hub_allowed():
        return hub.from_hub(name)
    raise BenchError(
        f"dataset '{name}' not found in {data_dir}" + did_you_mean(name, dataset_names(data_dir))
        + f"; set {hub.HUB_ENV}=1 to fall back to the HF hub where this machine reaches it"
    )


def split_file(folder: Path, split: str) -> Path | None:
    """The file holding ``split`` (``.jsonl`` or ``.jsonl.gz``), or None."""
    for suffix in (".jsonl", ".jsonl.gz"):
        candidate = folder / f"{split}{suffix}"
        if candidate.exists():
            return candidate
    return None


def _lines(path: Path) -> Iterator[str]:
    """The file's lines; a UTF-8 byte-order mark (as Windows editors write) is dropped."""
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig") as handle:
        yield from handle


def _not_utf8(path: Path, err: UnicodeDecodeError) -> BenchError:
    return BenchError(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} in a line, "
                      "e.g. a latin-1 file): save it as UTF-8")


def _unreadable(path: Path, err: Exception) -> BenchError:
    reason = (err.strerror if isinstance(err, OSError) else None) or str(err) or type(err).__name__
    return BenchError(f"{path}: cannot read ({reason})")


def read_split(folder: Path, split: str) -> list[dict[str, Any]]:
    """All rows of a split.

    Raises:
        BenchError: when the split is missing, empty, or a line is not JSON.
    """
    path = split_file(folder, split)
    if path is None:
        present = sorted(p.name for p in folder.glob("*.jsonl*"))
        raise BenchError(f"{folder}: no split '{split}' (files: {', '.join(present) or 'none'})")
    rows = []
    try:
        for number, line in enumerate(_lines(path), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise BenchError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise BenchError(f"{path}:{number}: expected a JSON object (one row), got {type(row).__name__}")
            rows.append(row)
    except UnicodeDecodeError as err:
        raise _not_utf8(path, err) from None
    except (OSError, EOFError) as err:  # a folder, an unreadable file, a .gz that is not (or not all) gzip
        raise _unreadable(path, err) from None
    if not rows:
        raise BenchError(f"{path}: split '{split}' is empty")
    return rows


def read_labels(folder: Path) -> list[str]:
    """Class names from ``labels.json`` (index = label id)."""
    path = folder / "labels.json"
    if not path.exists():
        raise BenchError(f"{folder}: no labels.json (a list of class names, index = label id)")
    try:
        names = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as err:
        raise _not_utf8(path, err) from None
    except json.JSONDecodeError as err:
        raise BenchError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except OSError as err:
        raise _unreadable(path, err) from None
    if not isinstance(names, list) or len(names) < 2:
        raise BenchError(f"{path}: expected a list of at least two class names, got {json.dumps(names)[:80]}")
    if not all(isinstance(n, str) and n.strip() for n in names) or len(set(names)) != len(names):
        raise BenchError(f"{path}: class names must be distinct non-empty strings, got {json.dumps(names)[:80]}")
    return names


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (memoised per path, size and mtime)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def column(rows: list[dict[str, Any]], field: str, where: str) -> list[Any]:
    """One field of every row; a missing field is an error naming the row."""
    values = []
    for i, row in enumerate(rows, start=1):
        if field not in row:
            raise BenchError(f"{where}:{i}: no field '{field}' (fields: {', '.join(sorted(row))})")
        values.append(row[field])
    return values
