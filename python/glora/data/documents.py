"""Text documents for language modelling (``glora run --task causal-lm``): one file's documents, checked.

A ``.txt`` file holds one document per line (UTF-8; blank lines are skipped, a line's surrounding whitespace is
kept out). Every other file is a table read by :func:`glora.data.tables.read_columns` (CSV, TSV, JSON Lines, JSON,
Parquet, a ``datasets`` ``save_to_disk`` folder) whose text column holds one document per row; rows whose text is
blank are skipped there too. A missing file, an unreadable or empty one, a missing column or a value that is not
text raises :class:`glora.errors.DataError` naming the file and the column or line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from glora.errors import DataError

__all__ = ["TEXT_SUFFIXES", "Documents", "read_documents"]

TEXT_SUFFIXES = (".txt",)
"""Files read as plain text, one document per line."""


@dataclass
class Documents:
    """The documents of one file (``source``), in file order, blank ones left out; ``rows`` holds each one's line
    (``.txt``) or row (tables) in the file, counted from 1, for messages."""

    texts: list[str]
    source: str
    rows: list[int]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: list[int]) -> Documents:
        """The documents at ``index``, in that order."""
        return Documents([self.texts[i] for i in index], self.source, [self.rows[i] for i in index])


def _error(message: str, path: str, **details: object) -> DataError:
    return DataError(message, kind="data", details={"path": path, **details})


def read_documents(path: str, column: str, role: str) -> Documents:
    """The documents of ``path`` (``role`` names the split in messages: ``train``, ``validation``, ``test``,
    ``input``); ``column`` is the text column of a table (unused for ``.txt``)."""
    if not os.path.exists(path):
        raise _error(f"{role} file {path} does not exist", path)
    if os.path.isfile(path) and path.lower().endswith(TEXT_SUFFIXES):
        docs = _read_text_file(path, role)
    else:
        docs = _read_table(path, column, role)
    if not docs.texts:
        where = "" if path.lower().endswith(TEXT_SUFFIXES) else f" (column {column!r})"
        raise _error(f"{role} file {path}{where} holds no document (only blank lines or rows)", path)
    return docs


def _read_text_file(path: str, role: str) -> Documents:
    texts: list[str] = []
    rows: list[int] = []
    try:
        with open(path, "rb") as fh:
            for number, raw in enumerate(fh, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise _error(
                        f"{role} file {path}, line {number}: not UTF-8 text ({err.reason} at byte {err.start})",
                        path,
                        line=number,
                    ) from None
                if number == 1:
                    line = line.removeprefix("\ufeff")
                if "\x00" in line:
                    raise _error(f"{role} file {path}, line {number}: holds a NUL byte (a binary file?)", path)
                text = line.strip()
                if text:
                    texts.append(text)
                    rows.append(number)
    except OSError as err:
        raise _error(f"{role} file {path} cannot be read ({err.strerror or err})", path) from None
    return Documents(texts, path, rows)


def _read_table(path: str, column: str, role: str) -> Documents:
    from glora.data.tables import check_texts, read_columns

    values = read_columns(path, [column], role)[column]
    blank = [isinstance(v, str) and not v.strip() for v in values]
    # check_texts refuses blank texts, which documents skip: it checks the others, a stand-in keeping the rows
    texts = check_texts(["-" if b else v for v, b in zip(values, blank)], path, column, role)
    kept = [(row, t.strip()) for row, (t, b) in enumerate(zip(texts, blank), start=1) if not b]
    return Documents([t for _, t in kept], path, [row for row, _ in kept])
