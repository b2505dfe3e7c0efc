"""What a sweep's summary says of itself: which randomness its seed controls (``randomness``), which grid point
validation chose (``describe_selection``, ``point_label``), which seeds were tested on last.ckpt for want of a best
one (``describe_summary``): the lines under a compare table and in summary.md."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml

from bigmodel.commands.held_settings import runs_of


def randomness(summary: dict[str, Any]) -> dict[str, Any]:
    """Which randomness the sweep's seed controls, read off each run's resolved config: ``seed_everything`` (the
    model's initialisation and dropout) and ``data.init_args.seed`` (training order, validation hold-out, few-shot
    draws, augmentation). Each is ``"seed"`` (it follows the run's seed) or the one value every run used."""
    if "randomness" in summary:
        return summary["randomness"]
    seen: dict[str, dict[int, Any]] = {"model": {}, "data": {}}
    for run in summary.get("runs", []):
        config = yaml.safe_load(run["config"]) if run.get("config") else None
        if not config:
            continue
        seen["model"][run["seed"]] = config.get("seed_everything")
        seen["data"][run["seed"]] = ((config.get("data") or {}).get("init_args") or {}).get("seed")
    record: dict[str, Any] = {}
    for kind, values in seen.items():
        if not values:
            record[kind] = "unknown"
        elif all(v == s for s, v in values.items()):
            record[kind] = "seed"
        elif len(set(map(str, values.values()))) == 1:
            record[kind] = next(iter(values.values()))
        else:
            record[kind] = "varies"
    return record


def describe_randomness(record: dict[str, Any]) -> str:
    """``the seed sets the model's initialisation (seed_everything); the data seed is fixed at 42``."""
    parts = {"model": "the model's initialisation and dropout (seed_everything)",
             "data": "the data order, hold-out and draws (data.init_args.seed)"}
    varied = [parts[k] for k in ("model", "data") if record.get(k) == "seed"]
    fixed = [f"{k} seed fixed at {record[k]}" for k in ("model", "data") if record.get(k) not in ("seed", "unknown")]
    text = "the seed sets " + " and ".join(varied) if varied else "the seed sets neither model nor data seed"
    return text + ("; " + ", ".join(fixed) if fixed else "")


def describe_summary(summary: dict[str, Any]) -> list[str]:
    """A summary's lines on what its seeds control, for a grid which point validation chose, and which seeds were
    tested on last.ckpt where the sweep asked for best.ckpt."""
    lines = [f"Seeds: {describe_randomness(summary['randomness'])}."] if "randomness" in summary else []
    chosen = (summary.get("selected") or {}).get("selected")
    if chosen:
        lines += describe_selection(chosen)
    if summary.get("not_selected"):
        lines.append(f"No grid point selected: {summary['not_selected']}.")
    fell_back = [r for r in runs_of(summary, None) if Path(r.get("ckpt_path") or "").name == "last.ckpt"]
    if fell_back and asked_ckpt(summary) == "best":
        seeds = ", ".join((f"{r['point']} " if r.get("point", "default") != "default" else "") + f"seed {r['seed']}"
                          for r in fell_back)
        lines.append("Tested on last.ckpt, not best.ckpt (none was saved, as when a fit ends before its first "
                     f"validation): {seeds}.")
    return lines


def describe_selection(chosen: dict[str, Any]) -> list[str]:
    """The lines on a grid point chosen on validation (a summary's ``selected.selected`` record): which point (or
    each seed's), on what, and what was left out of the choice."""
    which = chosen.get("point") or ", ".join(f"seed {s}: {p}" for s, p in chosen["points"].items())
    counts = f" (n per point: {', '.join(f'{p} {n}' for p, n in chosen['n'].items())})" if "n" in chosen else ""
    lines = [f"Selected on validation ({chosen['metric']}, {chosen['goal']}, by {chosen['by']}): {which}{counts}; "
             "test metrics chose nothing."]
    lines += [f"Not eligible: {p}: {why}." for p, why in chosen.get("left_out", {}).items()]
    return lines + [f"Seed {s} {why}." for s, why in chosen.get("incomplete", {}).items()]


def point_label(point: dict[str, Any]) -> str | None:
    """How a compared point of a grid sweep is named beside the sweep (``1e-3, selected on val/acc``; a named
    point: its name); None for a sweep's only point."""
    chosen = point.get("selected") if point.get("point") == "selected" else None
    if chosen:
        which = chosen.get("point") or "each seed's best point"
        return f"{which}, selected on {chosen['metric']}"
    return None if point.get("point") in (None, "default") else point["point"]


def asked_ckpt(summary: dict[str, Any]) -> str | None:
    """The checkpoint the sweep asked to test on (``best``, ``last``, ``none``): its ``test_ckpt``, or for a summary
    made before that was recorded, its command's ``--test_ckpt`` (``best`` when not given); None when neither says."""
    if "test_ckpt" in summary:
        return summary["test_ckpt"]
    try:
        words = shlex.split(summary.get("command") or "")
    except ValueError:  # not a command line this parses: it says nothing
        return None
    if words[:2] != ["bigmodel", "sweep"]:
        return None
    asked = [w.removeprefix("--test_ckpt=") if w.startswith("--test_ckpt=") else after
             for w, after in zip(words, [*words[1:], ""]) if w == "--test_ckpt" or w.startswith("--test_ckpt=")]
    return asked[-1] if asked else "best"  # the last given wins, as argparse reads it; best: the option's default
