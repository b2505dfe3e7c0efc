"""What two sweeps held fixed besides the method they compare: the trainer's budget and schedule, the data, the
checkpoint each seed was tested on -- read from each summary's recorded run configs (``held_settings``), told apart
as Lightning reads them (``setting_differences``), named in one note under a comparison (``settings_note``). Sweeps
tested on different data get no verdict (``different_data``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from bigmodel.commands.run_settings import flatten


# What a comparison of methods holds fixed (``setting_differences``): the trainer's budget and schedule, which weights
# "best" is, and the data. Never the model's settings (the method compared, its learning rate included), the seeds
# (``randomness``), the hardware, or a run's bookkeeping (its directories, logger, progress output).
HELD = tuple(f"trainer.{key}" for key in (
    "max_steps", "min_steps", "max_epochs", "min_epochs", "max_time", "fast_dev_run", "overfit_batches",
    "limit_train_batches", "limit_val_batches", "limit_test_batches", "accumulate_grad_batches", "val_check_interval",
    "check_val_every_n_epoch", "precision", "gradient_clip_val", "gradient_clip_algorithm")) + (
    "checkpoint.monitor", "checkpoint.mode")
# data settings that are not the data: its seed (``randomness``), loader processes, a cache, padding (the attention
# mask hides it), and what goes with the model: its tokenizer (the encoder's vocabulary) and a prompt's template
# (prompting is the method)
NOT_DATA = tuple(f"data.init_args.{key}" for key in ("seed", "num_workers", "num_proc", "cache_dir",
                                                     "pad_to_multiple_of", "tokenizer", "template"))
# Lightning's defaults, which a config may spell as null: one setting, not a difference
LIGHTNING_NULL = {"trainer.max_steps": -1, "trainer.accumulate_grad_batches": 1, "trainer.val_check_interval": 1.0,
                  "trainer.check_val_every_n_epoch": 1, "trainer.precision": "32-true", "trainer.overfit_batches": 0.0,
                  "trainer.gradient_clip_algorithm": "norm",
                  **{f"trainer.limit_{s}_batches": 1.0 for s in ("train", "val", "test")}}
# settings Lightning reads as a number of batches when an int and as a fraction (of the epoch, of the data) when a
# float: ``limit_val_batches: 1`` is one batch, ``1.0`` all of them
BATCHES_OR_FRACTION = ("trainer.val_check_interval", "trainer.overfit_batches",
                       *(f"trainer.limit_{s}_batches" for s in ("train", "val", "test")))
TESTED = "tested checkpoint"
# the settings that say which data a sweep was tested on: the data module and what names its test set. Sweeps that
# differ in one are not comparable: no verdict (``different_data``). Not its storage (``data_dir``: where torchvision
# sets are downloaded) nor how it is read (columns, lengths, augmentation): those are the note's
TEST_DATA = ("data.class_path", *(f"data.init_args.{key}" for key in ("dataset", "dataset_config", "test_files")))


def _held(key: str) -> bool:
    return key in HELD or (key.startswith("data.") and not key.startswith(NOT_DATA))


def runs_of(summary: dict[str, Any], point: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The finished runs behind ``point`` (a grid point, or the one selected by mean); every finished run when the
    point was chosen per seed or is not given."""
    name = point and ((point.get("selected") or {}).get("point") if point.get("selected") else point.get("point"))
    runs = [r for r in summary.get("runs", []) if r.get("status", "done") == "done"]
    return [r for r in runs if r.get("point", name) == name] if name else runs


def tested_checkpoints(summary: dict[str, Any], point: dict[str, Any] | None = None) -> dict[int, str]:
    """Per finished run's seed, the checkpoint its test ran on (``best``, ``last``): ``last`` where a sweep asked for
    best and the fit never validated (no best.ckpt). Runs that trained nothing (``--test_ckpt none``) or recorded no
    checkpoint are not in it."""
    return {r["seed"]: Path(r["ckpt_path"]).name.removesuffix(".ckpt") for r in runs_of(summary, point)
            if r.get("ckpt_path")}


def describe_checkpoints(tested: dict[int, str]) -> str:
    """``last``, or ``best (seeds 0, 1), last (seed 2)`` when the seeds differ."""
    kinds = {kind: [str(s) for s, k in tested.items() if k == kind] for kind in dict.fromkeys(tested.values())}
    if len(kinds) == 1:
        return next(iter(kinds))
    return ", ".join(f"{kind} (seed{'s' * (len(seeds) > 1)} {', '.join(seeds)})" for kind, seeds in kinds.items())


def held_settings(summary: dict[str, Any], point: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """What a sweep held that a comparison of methods needs the same on both sides (``HELD``, the data and the tested
    checkpoint), from the resolved config of one finished run of ``point``; None when the summary keeps no config
    (made by an earlier bigmodel)."""
    runs = runs_of(summary, point)
    config = next((yaml.safe_load(r["config"]) for r in runs if r.get("config")), None)
    if not config:
        return None
    held = {k: v for k, v in flatten(config).items() if _held(k)}
    tested = tested_checkpoints(summary, point)
    if tested and len(tested) == len(runs):  # every run trained and says what it was tested on
        held[TESTED] = describe_checkpoints(tested)
    return held


def setting_differences(other: dict[str, Any] | None, reference: dict[str, Any] | None) -> list[str]:
    """``trainer.max_steps (10 vs 250)`` per held setting that differs (``other``'s value first); nothing when a side
    has no record. A setting only one side records (an earlier bigmodel's config lacked it) or spells as null counts
    as Lightning's default; the tested checkpoint only when both sides trained."""
    if other is None or reference is None:
        return []
    keys = sorted(dict.fromkeys([*reference, *other]), key=lambda k: k == TESTED)  # the checkpoint last
    keys = [k for k in keys if k != TESTED or k in reference and k in other]
    return [f"{k} ({_show(other.get(k))} vs {_show(reference.get(k))})" for k in keys
            if _value(other, k) != _value(reference, k)]


def different_data(differences: list[str]) -> str | None:
    """``not comparable: tested on different data (data.class_path; values in the note)`` when ``differences`` (from
    ``setting_differences``) name a ``TEST_DATA`` setting: a verdict between test sets says nothing of the methods;
    else None."""
    named = [key for key in (d.split(" (", 1)[0] for d in differences) if key in TEST_DATA]
    return f"not comparable: tested on different data ({', '.join(named)}; values in the note)" if named else None


def _value(settings: dict[str, Any], key: str) -> Any:
    """A setting as Lightning reads it: null (or unset) as its default (a flag's: false), a precision by its full name
    (``32`` is ``32-true``), a nonzero int count of batches apart from a fraction (``1`` is not ``1.0``)."""
    value = settings.get(key)
    value = LIGHTNING_NULL.get(key) if value is None else None if value is False else value
    if key in BATCHES_OR_FRACTION and isinstance(value, int) and not isinstance(value, bool) and value != 0:
        return ("batches", value)  # 0 and 0.0 both mean none
    if key == "trainer.precision":
        value = str(value)
        return {"16": "16-mixed", "bf16": "bf16-mixed", "32": "32-true", "64": "64-true"}.get(value, value)
    return value


def _show(value: Any) -> str:
    return "null" if value is None else value if isinstance(value, str) else json.dumps(value)


def settings_note(differences: list[str], most: int = 8) -> str:
    """The one line under a comparison whose sweeps differ outside the model (``most`` settings named)."""
    named = ", ".join(differences[:most]) + (f" and {len(differences) - most} more" if len(differences) > most else "")
    return f"the sweeps differ in {named}: the difference may come from these, not from the method"
