"""Text: a Hugging Face dataset name, local files, or a built-in offline dataset -> ``DatasetDict``.

Local files are read split by split, so a problem is reported with the file it is in. ``load_hub`` is every
kind's way to the hub (image-text datasets use it too).
"""

from __future__ import annotations

import glob
import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, load_dataset
from datasets.exceptions import DatasetGenerationError

from bigmodel.data.sources import builtin
from bigmodel.data.sources.read_errors import HEADERLESS_HINT, check_utf8, looks_like_data, not_utf8, read_error
from bigmodel.utils.hub import HubUnavailableError, hub_load_error, hub_offline_mode, hub_reachable, offline_message

SPLITS = ("train", "validation", "test")  # the splits a source may have, in this order
BUILDERS = {".txt": "text", ".text": "text", ".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv",
            ".parquet": "parquet"}
Files = str | list[str] | None


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
        raise ValueError(read_error(split, files, builder, kwargs, cause)) from err
    except ValueError as err:  # datasets: 'Instruction "test" corresponds to no data!'
        if "corresponds to no data" not in str(err):
            raise
        leave = "" if split == "train" else f" or leave {split}_files unset"
        raise ValueError(f"the {split} split is empty: {files} has no rows (only a header?); add data{leave}") from err


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
