"""Raw data from a Hugging Face dataset name, local files, or a built-in offline dataset -> ``DatasetDict``."""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

from datasets import DatasetDict, load_dataset
from datasets.exceptions import DatasetGenerationError

from bigmodel.data import builtin
from bigmodel.data.hub import HubUnavailableError, hub_offline_mode, hub_reachable, offline_message

BUILDERS = {".txt": "text", ".text": "text", ".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv",
            ".parquet": "parquet"}
Files = str | list[str] | None


def default_cache_dir() -> Path:
    return Path(os.environ.get("BIGMODEL_CACHE", Path.home() / ".cache" / "bigmodel"))


def _expand(files: Files, split: str) -> list[str]:
    if files is None:
        return []
    patterns = [files] if isinstance(files, str) else list(files)
    out: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.expanduser(pattern)))
        if not matches:
            raise FileNotFoundError(f"{split} file {pattern!r} does not exist (no file matches it)")
        empty = [m for m in matches if os.path.getsize(m) == 0]
        if empty:
            raise ValueError(f"{split} file {empty[0]!r} is empty; give a file with data")
        out += matches
    return out


def load_local(splits: dict[str, Files]) -> DatasetDict:
    data_files = {split: _expand(files, split) for split, files in splits.items() if files is not None}
    if not data_files:
        raise ValueError("no data given: set data.init_args.dataset (a Hugging Face name) or train_files")
    suffixes = {Path(f).suffix.lower() for files in data_files.values() for f in files}
    builders = {BUILDERS.get(s) for s in suffixes}
    if None in builders or len(builders) != 1:
        raise ValueError(
            f"cannot mix or read file types {sorted(suffixes)}; use one of {', '.join(sorted(BUILDERS))}"
        )
    builder = builders.pop()
    kwargs = {"delimiter": "\t"} if suffixes == {".tsv"} else {}
    if builder == "csv" and suffixes == {".tsv"}:
        kwargs["quoting"] = 3  # csv.QUOTE_NONE: GLUE-style TSVs contain bare quote characters
    try:
        return load_dataset(builder, data_files=data_files, **kwargs)
    except DatasetGenerationError as err:
        cause = err.__cause__ or err.__context__ or err
        raise ValueError(f"cannot read {sorted(suffixes)} files {data_files}: {cause}") from err
    except ValueError as err:  # datasets: 'Instruction "test" corresponds to no data!'
        empty = re.search(r'Instruction "(\w+)" corresponds to no data', str(err))
        if empty is None:
            raise
        split = empty[1]
        raise ValueError(
            f"the {split} split is empty: {data_files[split]} has no rows (only a header?); add data or leave "
            f"{split}_files unset"
        ) from err


def load_hub(name: str, config: str | None) -> DatasetDict:
    if not hub_offline_mode() and not hub_reachable():
        raise HubUnavailableError(
            offline_message(
                "dataset",
                name,
                "Copy the data to local files (.txt/.jsonl/.csv/.tsv/.parquet) and pass them as "
                "data.init_args.train_files / validation_files / test_files",
            )
        )
    return load_dataset(name, config)


def load_source(
    dataset: str | None,
    dataset_config: str | None,
    splits: dict[str, Files],
    cache_dir: Path,
) -> DatasetDict:
    if dataset is not None and dataset.startswith("builtin:"):
        return load_local(builtin.materialise(dataset.removeprefix("builtin:"), cache_dir / "builtin"))
    if dataset is not None:
        return load_hub(dataset, dataset_config)
    return load_local(splits)


def ensure_validation(ds: DatasetDict, fraction: float, seed: int) -> DatasetDict:
    """Carve a validation split out of train when the source has none."""
    if "train" not in ds:
        raise ValueError(f"the data has no 'train' split (splits: {sorted(ds)}); give train files")
    if len(ds["train"]) == 0:
        raise ValueError("the train split is empty; check the data files")
    if "validation" in ds:
        return ds
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1) when no validation split is given, got {fraction}")
    parts = ds["train"].train_test_split(test_size=fraction, seed=seed)
    out = DatasetDict(ds)
    out["train"], out["validation"] = parts["train"], parts["test"]
    return out
