"""What went wrong reading local files, in the user's words: the file, the line and the fix. These run only after a
failure (they re-read the files), except ``check_utf8``, which the JSON reader needs (pyarrow keeps bytes that are
not UTF-8 as they are)."""

from __future__ import annotations

import json
import re

import pyarrow as pa
from datasets import Dataset, load_dataset
from datasets.table import CastError

from bigmodel.utils.exceptions import error_chain

HEADERLESS_HINT = "if the files have no header row, set data.init_args.column_names (e.g. [text, label])"


def not_utf8(split: str, files: list[str]) -> str | None:
    """The first line of ``files`` that is not UTF-8, as a message naming the file, the line and the fix; None when
    all are UTF-8 (read line by line in binary: runs only after a decoding failure)."""
    for path in files:
        with open(path, "rb") as raw:
            if raw.read(2) in (b"\xff\xfe", b"\xfe\xff"):  # the byte order mark of UTF-16 (Excel's "Unicode Text")
                return (f"{split} file {path!r} is UTF-16 text, not UTF-8; re-save it as UTF-8 (e.g. `iconv -f utf-16 "
                        f"-t utf-8 IN > OUT`, or 'Save as... CSV UTF-8' in a spreadsheet)")
            raw.seek(0)
            for number, line in enumerate(raw, 1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as err:
                    byte = line[err.start]
                    latin = bytes([byte]).decode("cp1252", "replace")
                    return (f"{split} file {path!r} is not UTF-8 text: line {number} has the byte 0x{byte:02x} "
                            f"({latin!r} in Latin-1/Windows-1252); re-save the file as UTF-8 (e.g. "
                            f"`iconv -f cp1252 -t utf-8 IN > OUT`, or 'Save as... UTF-8' in a spreadsheet)")
    return None


def check_utf8(ds: Dataset, split: str, files: list[str]) -> None:
    """pyarrow's JSON reader stores bytes that are not UTF-8 as they are, and the first look at those rows then fails
    with "Invalid UTF8 sequence" and no file or line: validated here (a C++ scan of the table), as the CSV and text
    readers, which decode in Python, report it. Only the string columns: the scan is linear in their size."""
    table = ds.data.table
    try:
        for name, kind in zip(table.column_names, table.schema.types):
            if pa.types.is_string(kind) or pa.types.is_large_string(kind):
                table.column(name).validate(full=True)
    except pa.ArrowInvalid:
        message = not_utf8(split, files)
        if message is None:
            raise
        raise ValueError(message) from None


def read_error(split: str, files: list[str], builder: str, kwargs: dict, cause: BaseException) -> str:
    """Which file failed and why, in the user's words; runs only after a failure (it re-reads files)."""
    if any(isinstance(e, UnicodeDecodeError) for e in error_chain(cause)):
        message = not_utf8(split, files)
        if message is not None:
            return message
    if builder == "json" and "JSON parse error" in str(cause):
        message = bad_json_line(split, files)
        if message is not None:
            return message
    fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(cause))
    if fields:
        bad = files[0] if len(files) == 1 else _first_unreadable(builder, files, kwargs)
        how = ("in .tsv files every tab separates fields and quote characters are plain text, so a text with a "
               "tab in it breaks its row: replace tabs inside texts with spaces" if kwargs.get("quoting") == 3 else
               'a text that contains a comma must be in double quotes ("a, b"), and a quote inside it doubled ("")')
        return (f"cannot read {split} file {bad!r}: line {fields[2]} has {fields[3]} fields where {fields[1]} are "
                f"expected; {how}")
    columns = {f: _columns(builder, f, kwargs) for f in files} if isinstance(cause, CastError) else {}
    bad = next((f for f in files if columns and columns[f] != columns[files[0]]), None)
    if bad is not None:
        hint = f"; its first row may be data: {HEADERLESS_HINT}" if looks_like_data(columns[bad]) else ""
        return (f"{split} file {bad!r} has columns {columns[bad]} but {files[0]!r} has {columns[files[0]]}; "
                f"give all {split} files the same columns{hint}")
    return f"cannot read {split} files {files}: {' '.join(str(cause).split())}"


def bad_json_line(split: str, files: list[str]) -> str | None:
    """The first line of the .jsonl ``files`` that is not a JSON object, as a message naming the file and the line:
    pyarrow's "in row N" counts from 0 within the block it parsed, not the file's line."""
    for path in files:
        if not path.lower().endswith(".jsonl"):
            continue
        with open(path, encoding="utf-8-sig", errors="replace") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    return (f"cannot read {split} file {path!r}: line {number} is not valid JSON ({err.msg} at column "
                            f"{err.colno}); each line of a .jsonl file is one object such as "
                            '{"text": "...", "label": "..."}')
                if not isinstance(row, dict):
                    return (f"cannot read {split} file {path!r}: line {number} is a JSON {type(row).__name__}, not an "
                            'object; each line of a .jsonl file is one object such as {"text": "...", "label": "..."}')
    return None


def _columns(builder: str, file: str, kwargs: dict) -> list[str]:
    first = next(iter(load_dataset(builder, data_files=[file], split="train", streaming=True, **kwargs)), {})
    return list(first)


def _first_unreadable(builder: str, files: list[str], kwargs: dict) -> str:
    for f in files:
        try:
            for _ in load_dataset(builder, data_files=[f], split="train", streaming=True, **kwargs).iter(10_000):
                pass
        except Exception:  # noqa: BLE001 - any failure marks the file
            return f
    return files[0]


def looks_like_data(columns: list[str], ds: Dataset | None = None) -> bool:
    """A header that reads like a row of data: a number, a sentence, or a value found in its own column."""
    for name in columns:
        if re.fullmatch(r"[+-]?\d+(\.\d*)?", name.strip()) or len(name.split()) > 3:
            return True
    if ds is not None and len(ds):
        sample = ds.select(range(min(len(ds), 1000)))
        return any(name in {str(v) for v in sample[name]} for name in columns)
    return False
