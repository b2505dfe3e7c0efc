"""What a sweep may reuse of the runs in its ``--out``: a run's results and checkpoints only when its recorded
settings (``sweep_settings.json``) are this sweep's; otherwise the sweep stops before anything runs, since the old
runs' numbers would be reported under the new command (``check``). ``report`` says which runs are reused."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import yaml

from bigmodel import UsageError
from bigmodel.commands.run_settings import OUTPUT_KEYS, merge
from bigmodel.commands.sweep.plan import Run

SETTINGS_FILE = "sweep_settings.json"  # what the run was configured with (``settings``)


def settings(args: list[str], test_ckpt: str) -> dict[str, Any]:
    """What a run whose fit gets ``args`` (``-c`` files and overrides) and is tested with ``test_ckpt`` is configured
    with, flat (``{"model.init_args.lr": 0.003, ...}``): each ``-c`` file's content merged in order, then the
    overrides (``--k v`` and ``--k=v`` alike, values read as YAML), the grid point and seeds, as the CLI would merge
    them; output paths left out (``OUTPUT_KEYS``). Comments and layout of the files do not count; the code's
    defaults are not in it (the summary records the commit)."""
    flat: dict[str, Any] = {"sweep.test_ckpt": test_ckpt}
    i = 0
    while i < len(args):
        if args[i] in ("-c", "--config"):
            content = yaml.safe_load(Path(args[i + 1]).read_text(encoding="utf-8"))
            if content:
                merge(flat, "", content)
            i += 2
            continue
        key, sep, value = args[i].removeprefix("--").partition("=")
        if not sep and i + 1 < len(args) and not args[i + 1].startswith("--"):
            value, i = args[i + 1], i + 1
        i += 1
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        if key.endswith("+"):  # --trainer.callbacks+=...: appended
            flat[key] = [*flat.get(key, []), parsed]
        else:
            merge(flat, key, parsed)
    for key in OUTPUT_KEYS:
        flat.pop(key, None)
    return json.loads(json.dumps(flat, default=str))  # as read back from the record (dates, tuples)


def check(runs: list[Run], settings_of: Callable[[Run], dict[str, Any]]) -> None:
    """Stops (one line naming the directory) when a run that would be reused -- a test result, a finished fit, a
    checkpoint to resume -- was made with other settings than ``settings_of`` it; records each run's settings
    otherwise. A run made before records existed is reused as before, and says so."""
    changed, unrecorded = [], []
    for run in runs:
        record = Path(run.directory, SETTINGS_FILE)
        if not reusable(run):
            continue
        if not record.is_file():
            unrecorded.append(run.directory)
            continue
        differences = _differences(json.loads(record.read_text(encoding="utf-8")), settings_of(run))
        if differences:
            changed.append((run.directory, differences))
    if changed:
        where = os.path.commonpath([d for d, _ in changed])
        raise UsageError(f"runs in {where} were made with other settings ({changed[0][1]}): give another --out, "
                         f"or remove {where} to rerun")
    if unrecorded:
        print(f"sweep: {os.path.commonpath(unrecorded)} has no record of its runs' settings (made by an earlier "
              "bigmodel): reusing its results and checkpoints as made with these", flush=True)
    for run in runs:
        Path(run.directory).mkdir(parents=True, exist_ok=True)
        Path(run.directory, SETTINGS_FILE).write_text(json.dumps(settings_of(run), indent=1, sort_keys=True) + "\n",
                                                      encoding="utf-8")


def report(runs: list[Run], finished: Callable[[Run], bool]) -> None:
    """One line naming the runs this sweep reuses (``finished``) rather than runs (none: nothing said)."""
    reused = [run for run in runs if finished(run)]
    if not reused:
        return
    out = os.path.commonpath([str(Path(run.directory).parents[1]) for run in runs])
    which = "" if len(reused) == len(runs) else ": " + ", ".join(
        (f"{run.point} " if run.point != "default" else "") + f"seed {run.seed}" for run in reused)
    print(f"sweep: {len(reused)} of {len(runs)} runs reused from {out} (same settings{which}); "
          f"{len(runs) - len(reused)} to run", flush=True)


def reusable(run: Run) -> bool:
    """Whether a sweep would reuse something of ``run``'s: a result, a finished fit or a checkpoint to resume."""
    return (run.metrics_file.is_file() or run.validation_file.is_file() or Path(run.directory, ".fit_done").is_file()
            or any(run.checkpoints.glob("*.ckpt")))


def _differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    """``model.init_args.lr 0.003 -> 0.5, ...`` (the first three); empty when the settings are the same."""
    def show(settings: dict[str, Any], key: str) -> str:
        return json.dumps(settings[key]) if key in settings else "unset"

    changed = [f"{k} {show(old, k)} -> {show(new, k)}" for k in sorted(old.keys() | new.keys())
               if old.get(k, ...) != new.get(k, ...)]
    return ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
