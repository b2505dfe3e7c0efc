"""Class labels of a labelled text table (``TextClassificationDataModule``): which test split is unlabelled, the
class names the data implies, label values -> class ids. Each mistake is caught before training, with the option
that fixes it."""

from __future__ import annotations

from datasets import ClassLabel, Dataset, DatasetDict, Json, Value

from bigmodel.data.sources.text import SPLITS, blank_rows


def unlabelled(split: str, ds: Dataset, column: str) -> bool:
    """A test split without labels: every label missing, or all negative (GLUE's test sets use -1)."""
    if split != "test":
        return False
    if len(blank_rows(ds, column)) == len(ds):
        return True
    return str(getattr(ds.features[column], "dtype", "")).startswith("int") and all(v < 0 for v in ds.unique(column))


def integral_floats(ds: Dataset, column: str) -> bool:
    """Int labels that pandas read as floats (a column with NaN rows)."""
    if not str(getattr(ds.features[column], "dtype", "")).startswith("float"):
        return False
    return all(v is not None and float(v).is_integer() for v in ds.unique(column))


def label_values(ds: Dataset, column: str) -> list:
    """The distinct labels of a split. A JSON column mixing kinds (``1`` and ``"pos"``) is a ``Json`` feature,
    which ``Dataset.unique`` cannot read (a pyarrow traceback): its decoded values instead."""
    if isinstance(ds.features[column], Json):
        return list({repr(v): v for v in ds[column]}.values())
    return ds.unique(column)


def strip_labels(ds: Dataset, column: str) -> Dataset:
    """``ds`` with spaces around its label names removed: ``pos `` (a space typed after it, or after a CSV comma)
    would otherwise be a class of its own beside ``pos``, silently."""
    if getattr(ds.features[column], "dtype", None) not in ("string", "large_string"):
        return ds
    if all(v is None or v == v.strip() for v in ds.unique(column)):
        return ds
    return ds.map(lambda b: {column: [v.strip() if isinstance(v, str) else v for v in b[column]]}, batched=True)


def id_strings(ds: Dataset, column: str) -> bool:
    """Labels written as digit strings (JSON's quoted ``"0"``, ``"1"``): class ids, as the same digits unquoted
    are. Taken as names, ``"10"`` sorts before ``"2"``, so a split of unquoted ids meant other classes, silently."""
    if getattr(ds.features[column], "dtype", None) not in ("string", "large_string"):
        return False
    values = [v for v in ds.unique(column) if v is not None]  # written as ids are: "7", not "007" (a name then)
    return bool(values) and all(v.isascii() and v.isdigit() and str(int(v)) == v for v in values)


def normalise_labels(ds: Dataset, column: str, names_given: bool) -> Dataset:
    """One split's labels as the rest of the module reads them: spaces around names removed, digit strings as ids
    (unless ``label_names`` name the classes) and pandas' integral floats as ints."""
    ds = strip_labels(ds, column)
    if not names_given and id_strings(ds, column):
        ds = ds.cast_column(column, Value("int64"))
    if integral_floats(ds, column):  # int labels that pandas read as floats (a column with NaN rows)
        ds = ds.cast_column(column, Value("int64"))
    return ds


def check_label_kinds(raw: DatasetDict, column: str) -> None:
    """``0``, ``1`` and ``positive`` in one column would become three classes: a silent mistake."""
    kinds: dict[str, dict[str, set[str]]] = {"numbers": {}, "names": {}}
    for split, ds in raw.items():
        if split not in SPLITS or unlabelled(split, ds, column):
            continue
        for value in label_values(ds, column):
            number = isinstance(value, int) or isinstance(value, str) and value.strip().lstrip("+-").isdigit()
            kinds["numbers" if number else "names"].setdefault(str(value), set()).add(split)
    if kinds["numbers"] and kinds["names"]:
        def examples(found: dict[str, set[str]]) -> str:
            splits = sorted(set().union(*found.values()), key=SPLITS.index)
            return ", ".join(repr(v) for v in sorted(found)[:3]) + f" in {'/'.join(splits)}"

        raise ValueError(
            f"label column {column!r} mixes numbers ({examples(kinds['numbers'])}) and names "
            f"({examples(kinds['names'])}); use one kind: class names everywhere, or class ids 0..C-1 "
            "everywhere (named by data.init_args.label_names)"
        )


def class_names(train: Dataset, column: str) -> tuple[list[str], bool]:
    """The classes the training labels imply: a ``ClassLabel``'s names, else the sorted string labels, else
    ``0..max`` named by number; and whether they were named by number."""
    feature = train.features[column]
    if isinstance(feature, ClassLabel):
        return list(feature.names), False
    values = set(train.unique(column))
    if len(values) < 2:
        raise ValueError(
            f"the training labels in column {column!r} hold one value ({values.pop()!r}); a classifier "
            "needs examples of at least two classes: add data of the other classes, or list every class in "
            "data.init_args.label_names"
        )
    if all(isinstance(v, str) for v in values):
        return sorted(values), False
    if not all(isinstance(v, int) and v >= 0 for v in values):
        raise ValueError(f"labels in {column!r} must be non-negative ints or names, got {sorted(values)[:5]}")
    return [str(i) for i in range(max(values) + 1)], True


def label_ids(ds: Dataset, column: str, names: list[str], where: str, given: bool) -> Dataset:
    """``ds`` with a ``labels`` column of class ids (from names, or checked ids); ``given``: ``names`` came from
    data.init_args.label_names, not from the training data."""
    values = ds.unique(column)
    if any(isinstance(v, str) for v in values):
        index = {name: i for i, name in enumerate(names)}
        unknown = sorted(set(values) - set(index))
        if unknown:
            fix = ("add them to data.init_args.label_names, or correct those labels" if given else
                   "add training examples of them, or list every class in data.init_args.label_names")
            known = "data.init_args.label_names" if given else "the training classes"
            raise ValueError(f"{where} has labels {unknown[:5]} that are not among {known} {names}; {fix}")
        return ds.map(lambda b: {"labels": [index[v] for v in b[column]]}, batched=True)
    bad = sorted(v for v in values if not 0 <= v < len(names))
    if bad:
        raise ValueError(
            f"{where} has label ids {bad[:5]} outside 0..{len(names) - 1} ({len(names)} classes: {names}); fix the "
            "labels or set data.init_args.label_names"
        )
    return ds.map(lambda b: {"labels": b[column]}, batched=True)
