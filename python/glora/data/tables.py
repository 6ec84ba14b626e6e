"""Columns of a user's table file: CSV, TSV, JSON Lines, JSON, Parquet, or a folder written by ``datasets``'
``save_to_disk``. Every problem is a :class:`~glora.errors.DataError` whose message names the file by its role
(``train file data/x.csv ...``) and, where one is at fault, the column and the row or line.

Rows in messages count the examples from 1 (a CSV's header is not a row); JSON Lines messages give the line of
the file. pyarrow (Parquet) and ``datasets`` (saved folders) are optional and imported only when needed.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import json
import math
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any, Optional

from glora.errors import DataError

__all__ = ["FORMATS", "check_texts", "is_saved_dataset", "load_saved_dataset", "read_columns"]

FORMATS = {
    ".csv": "CSV",
    ".tsv": "TSV",
    ".tab": "TSV",
    ".jsonl": "JSON Lines",
    ".ndjson": "JSON Lines",
    ".json": "JSON",
    ".parquet": "Parquet",
}
"""The table files :func:`read_columns` reads, by extension; a folder must be a ``save_to_disk`` dataset."""

SUPPORTED = "CSV (.csv), TSV (.tsv, .tab), JSON Lines (.jsonl, .ndjson), JSON (.json), Parquet (.parquet) or a folder written by datasets' save_to_disk"


def _error(message: str, path: str, column: Optional[str] = None, **more: Any) -> DataError:
    details: dict[str, Any] = {"path": path}
    if column is not None:
        details["column"] = column
    details.update(more)
    return DataError(message, kind="data_file", details=details)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def read_columns(path: str, columns: Sequence[str], role: str) -> dict[str, list]:
    """The named columns of the table file at ``path`` as lists of Python values (str, int, float, None; a CSV's
    values are all strings), equal in length and holding at least one example. ``role`` (``train``,
    ``validation``, ``test``, ``input``) names the file in messages."""
    where = f"{role} file {path}"
    if not os.path.exists(path):
        raise _error(f"{where} does not exist", path)
    if os.path.isdir(path):
        if not is_saved_dataset(path):
            raise _error(
                f"{where} is a folder, but not one written by datasets' save_to_disk (no dataset_info.json and "
                f"state.json, nor dataset_dict.json); expected {SUPPORTED}",
                path,
            )
        table = _read_saved(path, columns, role)
    else:
        ext = os.path.splitext(path)[1].lower()
        if ext not in FORMATS:
            shown = ext or "no extension"
            raise _error(f"{where} has an unsupported format ({shown}); expected {SUPPORTED}", path)
        try:
            if ext in (".csv", ".tsv", ".tab"):
                table = _read_delimited(path, "\t" if ext in (".tsv", ".tab") else ",", where)
            elif ext in (".jsonl", ".ndjson"):
                table = _read_json_lines(path, where)
            elif ext == ".json":
                table = _read_json(path, where)
            else:
                table = _read_parquet(path, columns, where)
        except UnicodeDecodeError as err:
            raise _error(f"{where} is not UTF-8 text ({_first_line(err)})", path) from None
        except OSError as err:
            raise _error(f"{where} cannot be read ({_first_line(err)})", path) from None
    return _pick(table, columns, path, where)


class _Table:
    """A file's columns in their order, and its rows as dicts (JSON Lines) or its columns as lists."""

    def __init__(
        self, names: list[str], data: dict[str, list], n: int, lines: Optional[list[int]] = None, unit: str = "line"
    ) -> None:
        self.names = names
        self.data = data
        self.n = n
        self.lines = lines  # JSON: the line (or record number) of each record, for a message about a missing key
        self.unit = unit


def _pick(table: _Table, columns: Sequence[str], path: str, where: str) -> dict[str, list]:
    if table.n == 0:
        raise _error(f"{where} holds no examples", path)
    for column in columns:
        if column not in table.names:
            raise _error(f"{where} has no column {column!r}; its columns are {table.names}", path, column)
    out = {}
    for column in columns:
        values = table.data[column]
        if table.lines is not None:
            for i, value in enumerate(values):
                if value is _MISSING:
                    raise _error(f"{where}: {table.unit} {table.lines[i]} has no key {column!r}", path, column)
        out[column] = list(values)
    return out


_MISSING: Any = object()


@contextlib.contextmanager
def _large_fields() -> Iterator[None]:
    """Let the csv module read long texts (its default limit is 128 KiB a field); the limit is global, so it is
    put back afterwards."""
    old = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _read_delimited(path: str, delimiter: str, where: str) -> _Table:
    with open(path, encoding="utf-8-sig", newline="") as fh, _large_fields():
        reader = csv.reader(fh, delimiter=delimiter)
        try:
            header = next(reader, None)
            while header is not None and not header:  # blank lines before the header
                header = next(reader, None)
            if header is None:
                raise _error(
                    f"{where} holds no examples (it is empty; a header row naming the columns is needed)", path
                )
            names = [name.strip() for name in header]
            seen = set()
            for name in names:
                if name in seen:
                    raise _error(f"{where}: the header names column {name!r} twice", path, name)
                seen.add(name)
            data: dict[str, list] = {name: [] for name in names}
            n = 0
            for row in reader:
                if not row:
                    continue
                if len(row) != len(names):
                    raise _error(
                        f"{where}: line {reader.line_num} has {len(row)} fields, the header has {len(names)} ({names})",
                        path,
                    )
                for name, value in zip(names, row):
                    data[name].append(value)
                n += 1
        except csv.Error as err:
            raise _error(f"{where}: line {reader.line_num} is not valid CSV ({_first_line(err)})", path) from None
    return _Table(names, data, n)


def _read_json_lines(path: str, where: str, text: Optional[str] = None) -> _Table:
    if text is None:
        with open(path, encoding="utf-8-sig") as fh:
            text = fh.read()
    records: list[dict] = []
    lines: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            raise _error(f"{where}: line {number} is not valid JSON ({_first_line(err)})", path) from None
        if not isinstance(record, dict):
            raise _error(f"{where}: line {number} is not a JSON object but {type(record).__name__}", path)
        records.append(record)
        lines.append(number)
    return _records(records, lines)


def _records(records: list[dict], lines: list[int], unit: str = "line") -> _Table:
    names: list[str] = []
    seen: set[str] = set()
    for record in records:
        for key in record:
            if key not in seen:
                seen.add(key)
                names.append(key)
    data = {name: [record.get(name, _MISSING) for record in records] for name in names}
    return _Table(names, data, len(records), lines, unit)


def _read_json(path: str, where: str) -> _Table:
    with open(path, encoding="utf-8-sig") as fh:
        text = fh.read()
    try:
        value = json.loads(text)
    except ValueError as err:
        if text.lstrip().startswith("{") and "Extra data" in str(err):
            return _read_json_lines(path, where, text)  # JSON Lines under .json, as datasets' to_json writes
        raise _error(f"{where} is not valid JSON ({_first_line(err)})", path) from None
    if isinstance(value, list):
        for i, record in enumerate(value, start=1):
            if not isinstance(record, dict):
                raise _error(f"{where}: record {i} is not a JSON object but {type(record).__name__}", path)
        return _records(value, list(range(1, len(value) + 1)), unit="record")
    if isinstance(value, dict) and value and all(isinstance(v, list) for v in value.values()):
        lengths = {name: len(v) for name, v in value.items()}
        if len(set(lengths.values())) > 1:
            raise _error(f"{where}: its column lists differ in length: {lengths}", path)
        names = [str(name) for name in value]
        return _Table(names, {str(k): v for k, v in value.items()}, next(iter(lengths.values())))
    raise _error(
        f"{where} must hold a list of records or an object of equal-length column lists, got {type(value).__name__}",
        path,
    )


def _optional(module: str, what: str, path: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise _error(f"reading {what} needs the {package} package: pip install {package}", path) from None


def _read_parquet(path: str, columns: Sequence[str], where: str) -> _Table:
    pq = _optional("pyarrow.parquet", "Parquet files", path)
    try:
        names = list(pq.read_schema(path).names)
        wanted = [c for c in dict.fromkeys(columns) if c in names]
        table = pq.read_table(path, columns=wanted)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise _error(f"{where} is not a readable Parquet file ({_first_line(err)})", path) from None
    return _Table(names, table.to_pydict(), table.num_rows)


def is_saved_dataset(path: str) -> bool:
    """Whether ``path`` is a folder written by ``Dataset.save_to_disk`` (``dataset_info.json`` and
    ``state.json``) or ``DatasetDict.save_to_disk`` (``dataset_dict.json``)."""
    if not os.path.isdir(path):
        return False
    has = lambda name: os.path.isfile(os.path.join(path, name))  # noqa: E731
    return has("dataset_dict.json") or (has("dataset_info.json") and has("state.json"))


def load_saved_dataset(path: str, role: str) -> Any:
    """The ``datasets.Dataset`` saved in the folder ``path``; of a ``DatasetDict``, the split named ``role``, or
    its only split. Image columns decode to PIL images when read."""
    where = f"{role} file {path}"
    if not os.path.exists(path):
        raise _error(f"{where} does not exist", path)
    if not is_saved_dataset(path):
        raise _error(f"{where} is not a folder written by datasets' save_to_disk", path)
    datasets = _optional("datasets", "a saved dataset folder", path)
    try:
        loaded = datasets.load_from_disk(path)
    except Exception as err:  # datasets raises many kinds (FileNotFoundError, ArrowInvalid, JSON errors)
        raise _error(f"{where} is a saved dataset that cannot be loaded ({_first_line(err)})", path) from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded.keys())
        if role in loaded:
            return loaded[role]
        if len(splits) == 1:
            return loaded[splits[0]]
        raise _error(
            f"{where} is a DatasetDict without a split named {role!r}; its splits are {splits} "
            f"(save the one to use with save_to_disk, or name the split {role!r})",
            path,
        )
    if not isinstance(loaded, datasets.Dataset):
        raise _error(f"{where} holds a {type(loaded).__name__}, not a Dataset", path)
    return loaded


def _read_saved(path: str, columns: Sequence[str], role: str) -> _Table:
    dataset = load_saved_dataset(path, role)
    names = list(dataset.column_names)
    wanted = [c for c in dict.fromkeys(columns) if c in names]
    # the Arrow data as Python values: no decoding of image or audio features, ClassLabel columns stay integers
    data = dataset.select_columns(wanted).with_format("arrow")[:]
    return _Table(names, data.to_pydict(), dataset.num_rows)


def check_texts(values: list, path: str, column: str, role: str) -> list[str]:
    """``values`` if every one is a non-blank string; else DataError naming the file, the column and the row."""
    for row, value in enumerate(values, start=1):
        if not isinstance(value, str):
            shown = "nothing (null)" if value is None else repr(value)
            if isinstance(value, float) and math.isnan(value):
                shown = "NaN"
            raise _error(
                f"{role} file {path}: column {column!r} holds a value that is not text at row {row}: {shown}",
                path,
                column,
                row=row,
            )
        if not value.strip():
            raise _error(
                f"{role} file {path}: column {column!r} holds an empty text at row {row}", path, column, row=row
            )
    return list(values)
