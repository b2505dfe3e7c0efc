"""Text: a Hugging Face dataset name, local files, or a built-in offline dataset -> ``DatasetDict``.

Local files are read split by split, so a problem is reported with the file it is in. ``load_hub`` is every
kind's way to the hub (image-text datasets use it too).
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, load_dataset
from datasets.exceptions import DatasetGenerationError
from datasets.table import CastError

from bigmodel.data.sources import builtin
from bigmodel.utils.exceptions import error_chain
from bigmodel.utils.hub import HubUnavailableError, hub_load_error, hub_offline_mode, hub_reachable, offline_message

SPLITS = ("train", "validation", "test")  # the splits a source may have, in this order
BUILDERS = {".txt": "text", ".text": "text", ".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv",
            ".parquet": "parquet"}
Files = str | list[str] | None
HEADERLESS_HINT = "if the files have no header row, set data.init_args.column_names (e.g. [text, label])"


def expand_files(files: Files, split: str) -> list[str]:
    """Globs -> existing, non-empty files; what is wrong with a pattern is said in the user's words."""
    if files is None:
        return []
    patterns = [files] if isinstance(files, str) else list(files)
    out: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.expanduser(pattern)))
        if not matches:
            raise FileNotFoundError(f"{split} file {pattern!r} does not exist (no file matches it)")
        folder = next((m for m in matches if os.path.isdir(m)), None)
        if folder is not None:
            suffix = next((Path(f).suffix for f in sorted(os.listdir(folder)) if Path(f).suffix in BUILDERS), ".csv")
            raise ValueError(f"{split} file {folder!r} is a directory; give a file, or a glob of the files in it "
                             f"such as {os.path.join(folder, '*' + suffix)!r}")
        empty = [m for m in matches if os.path.getsize(m) == 0]
        if empty:
            raise ValueError(f"{split} file {empty[0]!r} is empty; give a file with data")
        out += matches
    return out


def load_local(splits: dict[str, Files], column_names: list[str] | None = None) -> DatasetDict:
    data_files = {split: expand_files(files, split) for split, files in splits.items() if files is not None}
    if not data_files:
        raise ValueError("no data given: set data.init_args.dataset (a Hugging Face name) or train_files")
    return DatasetDict({split: _load_split(split, files, column_names) for split, files in data_files.items()})


def _load_split(split: str, files: list[str], column_names: list[str] | None) -> Dataset:
    suffixes = sorted({Path(f).suffix.lower() for f in files})
    builders = {BUILDERS.get(s) for s in suffixes}
    if None in builders or len(builders) != 1:
        raise ValueError(f"cannot mix or read file types {suffixes} in {split}; use one of "
                         f"{', '.join(sorted(BUILDERS))}")
    builder = builders.pop()
    kwargs: dict = {}
    if builder == "text":
        kwargs = {"encoding": "utf-8-sig"}  # a BOM (Windows editors) is not text: as read_lines, and csv/json drop it
    if suffixes == [".tsv"]:
        kwargs = {"delimiter": "\t", "quoting": 3}  # csv.QUOTE_NONE: GLUE-style TSVs contain bare quote characters
    if column_names is not None:
        if builder != "csv":
            raise ValueError(f"column_names is for .csv/.tsv files without a header; {suffixes} files name their "
                             "columns themselves: remove data.init_args.column_names")
        kwargs["column_names"] = list(column_names)
    try:
        ds = load_dataset(builder, data_files={split: files}, split=split, **kwargs)
        if builder == "json":
            check_utf8(ds, split, files)
        return ds
    except DatasetGenerationError as err:
        cause = err.__cause__ or err.__context__ or err
        raise ValueError(_read_error(split, files, builder, kwargs, cause)) from err
    except ValueError as err:  # datasets: 'Instruction "test" corresponds to no data!'
        if "corresponds to no data" not in str(err):
            raise
        leave = "" if split == "train" else f" or leave {split}_files unset"
        raise ValueError(f"the {split} split is empty: {files} has no rows (only a header?); add data{leave}") from err


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
    readers, which decode in Python, report it."""
    try:
        ds.data.table.validate(full=True)
    except pa.ArrowInvalid:
        message = not_utf8(split, files)
        if message is None:
            raise
        raise ValueError(message) from None


def read_lines(files: list[str], split: str) -> list[str]:
    """The lines of text files (newlines removed); a file that is not UTF-8 is a one-line error naming its line."""
    try:
        lines: list[str] = []
        for f in files:
            with open(f, encoding="utf-8-sig") as handle:  # closed at once (not left to the garbage collector)
                lines += [line.rstrip("\n") for line in handle]
        return lines
    except UnicodeDecodeError:
        raise ValueError(not_utf8(split, files)) from None


def _read_error(split: str, files: list[str], builder: str, kwargs: dict, cause: BaseException) -> str:
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


def check_columns(ds: Dataset, columns: dict[str, str | None], split: str, where: str,
                  train_columns: list[str] | None = None) -> None:
    """Each named column (role -> name) must exist; the message says which option or file to fix."""
    for role, col in columns.items():
        if col is None or col in ds.column_names:
            continue
        hint = f"; the first row looks like data: {HEADERLESS_HINT}" if looks_like_data(ds.column_names, ds) else ""
        option = f"data.init_args.{role.replace(' ', '_')}_column"
        if split in ("train", "predict"):
            raise ValueError(f"{role} column {col!r} not found; columns are {ds.column_names} (set {option}){hint}")
        train = f", while train's are {train_columns}" if train_columns is not None else ""
        raise ValueError(f"{role} column {col!r} not found in {where}: its columns are {ds.column_names}{train}; "
                         f"give every split the same columns{hint}")


def check_texts(ds: Dataset, columns: list[str], split: str) -> None:
    """Text columns must hold strings: a column of numbers (an id, a label) is the wrong column, which the
    WordPiece trainer would skip as no text and the tokeniser then fail on, with neither saying why (corpus and
    labelled texts alike)."""
    for column in columns:
        dtype = getattr(ds.features[column], "dtype", type(ds.features[column]).__name__)
        if dtype in ("string", "large_string") or len(blank_rows(ds, column)) == len(ds):
            continue
        texts = [name for name, feature in ds.features.items()
                 if getattr(feature, "dtype", None) in ("string", "large_string")]
        raise ValueError(f"text column {column!r} of the {split} split holds {dtype} values, not texts; set "
                         f"data.init_args.text_column to a column of texts (here: {texts})")


def blank_rows(ds: Dataset, column: str) -> np.ndarray:
    """Indices of rows whose cell is missing, NaN or only whitespace."""
    cells = ds.with_format("arrow")[column]
    cells = cells.combine_chunks() if isinstance(cells, pa.ChunkedArray) else cells
    blank = pc.is_null(cells, nan_is_null=True)
    if pa.types.is_string(cells.type) or pa.types.is_large_string(cells.type):
        blank = pc.or_(blank, pc.equal(pc.utf8_trim_whitespace(cells), ""))
    return np.flatnonzero(blank.fill_null(True).to_numpy(zero_copy_only=False))


LOCAL_FILES_HINT = ("Copy the data to local files (.txt/.jsonl/.csv/.tsv/.parquet) and pass them as "
                    "data.init_args.train_files / validation_files / test_files")


def load_hub(name: str, config: str | None, hint: str = LOCAL_FILES_HINT) -> DatasetDict:
    """A hub dataset, or (offline) its cached copy; an unreachable hub is a ``HubUnavailableError`` at once, with
    ``hint`` saying how to give the data locally, instead of ``datasets``' retries and traceback. So is a name the
    hub (or, with ``HF_HUB_OFFLINE=1``, its cache) does not have: ``datasets`` raises a ``ConnectionError`` or a
    ``FileNotFoundError`` that the CLI would print as a traceback."""
    if not hub_offline_mode() and not hub_reachable():
        raise HubUnavailableError(offline_message("dataset", name, hint))
    try:
        return load_dataset(name, config)
    except (ConnectionError, FileNotFoundError) as err:
        raise hub_load_error("dataset", name, err, hint[0].lower() + hint[1:]) from err


def load_source(
    dataset: str | None,
    dataset_config: str | None,
    splits: dict[str, Files],
    cache_dir: Path,
    column_names: list[str] | None = None,
) -> DatasetDict:
    """A named dataset's own splits (hub or ``builtin:``), or else the local files of ``splits``."""
    given = [f"{split}_files" for split, files in splits.items() if files is not None]
    if dataset is not None and given:  # both: the files would be ignored without a word
        raise ValueError(f"data.init_args.dataset {dataset!r} brings its own splits, so {' and '.join(given)} would "
                         "be ignored: set dataset: null to read the files, or remove the files")
    if dataset is not None and dataset.startswith("builtin:"):
        return load_local(builtin.materialise(dataset.removeprefix("builtin:"), cache_dir / "builtin"))
    if dataset is not None:
        return load_hub(dataset, dataset_config)
    return load_local(splits, column_names)


def ensure_validation(ds: DatasetDict, fraction: float, seed: int | None) -> DatasetDict:
    """Carve a validation split out of train when the source has none: with a ``seed``, ``fraction`` of the rows drawn
    at random (independent examples: labelled texts); with None, the first ``fraction`` of the rows as one contiguous
    run (a corpus, whose rows are paragraphs of the same documents: see ``hold_out_first``)."""
    if "train" not in ds:
        raise ValueError(f"the data has no 'train' split (splits: {sorted(ds)}); give train files")
    if len(ds["train"]) == 0:
        raise ValueError("the train split is empty; check the data files")
    if "validation" in ds:
        return ds
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1) when no validation split is given, got {fraction}")
    out = DatasetDict(ds)
    if seed is None:
        out["train"], out["validation"] = hold_out_first(ds["train"], fraction)
    else:
        parts = ds["train"].train_test_split(test_size=fraction, seed=seed)
        out["train"], out["validation"] = parts["train"], parts["test"]
    return out


def hold_out_first(train: Dataset, fraction: float) -> tuple[Dataset, Dataset]:
    """(the rest, the first ``ceil(fraction * rows)`` rows): validation as one contiguous run of the text, as Hugging
    Face's run_mlm.py / run_clm.py take ``train[:p%]``. A row of a corpus is a line (a paragraph), so rows drawn at
    random would validate on paragraphs of the very articles trained on, an optimistic loss; contiguous, only the one
    document cut at the boundary is shared. Several files are one concatenation, in the order given (a glob's matches
    sorted): the first p % of that."""
    n = len(train)
    k = math.ceil(fraction * n)  # as train_test_split counts: the same number of rows as the random hold-out had
    if k >= n:
        raise ValueError(f"validation_fraction {fraction} of {n} train row(s) leaves nothing to train on; give more "
                         "text, a smaller validation_fraction or validation_files")
    return train.select(range(k, n)), train.select(range(k))
