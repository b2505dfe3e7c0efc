"""A sweep's summary: per grid point, every test metric as mean ± sample std with n and the per-seed values, with
what reproduces it (the command, each run's resolved config, the code's commit, the device and versions); written
as ``summary.{json,csv,md}`` (rendered by ``results``, which renders the results table from them too)."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from bigmodel.commands.summary_notes import randomness
from bigmodel.commands.intervals import lower_is_better
from bigmodel.commands.results import seed_key, seed_value, summary_csv, summary_markdown
from bigmodel.commands.sweep.plan import Run
from bigmodel.run.directory import versions as interpreter_versions


SUMMARY_FILES = ("summary.json", "summary.csv", "summary.md")


def summarise(runs: list[Run], command: str, test_ckpt: str = "best", select: str | None = None,
              select_by: str = "mean", planned: Callable[[Run], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Per grid point: each test metric's mean, sample std (n - 1; none for n = 1) and per-seed values, the
    parameter counts and the wall time per run; ``test_ckpt``, the checkpoint the runs were to be tested on (each
    run's ``ckpt_path`` is the one it was: last.ckpt where no best.ckpt was saved; "none": nothing was trained).
    ``select``: the validation metric that chooses a grid point (``select_point``), recorded as ``selected``.
    ``planned``: each run's settings as the sweep gives them (``Sweep.settings``), what the seeds control when no
    run finished to record its resolved config."""
    points = []
    for name in dict.fromkeys(r.point for r in runs):
        group = [r for r in runs if r.point == name]
        done = [r for r in group if r.status == "done"]
        metrics, validation = ({metric: _stats(list(values.values())) | {"values": values}
                                for metric, values in _per_seed(done, kind).items()} for kind in ("metrics", "validation"))
        seconds = [sum(r.seconds.values()) for r in done if r.seconds]
        points.append({
            "point": name, "grid": group[0].grid, "seeds": [r.seed for r in group], "metrics": metrics,
            **({"validation": validation} if validation else {}),
            "wall_seconds": _stats(seconds) if seconds else None,
            "parameters": next((r.parameters for r in done if r.parameters), None), "fitted": test_ckpt != "none",
            "failed": {r.seed: r.error for r in group if r.status == "failed"},
            "unfinished": {r.seed: r.error or r.status for r in group if r.status in ("interrupted", "pending")},
        })
    devices = sorted({r.device for r in runs if r.device})
    # the runs' own; none finished: the sweep's, which starts them with its own interpreter
    versions = next((r.versions for r in runs if r.versions), None) or interpreter_versions()
    summary = {
        "command": command, "date": time.strftime("%Y-%m-%d", time.gmtime()), "code": git_commit(),
        "test_ckpt": test_ckpt, "devices": devices, "versions": versions, "points": points,
        "runs": [asdict(r) for r in runs],
    }
    configured = any(r.config for r in runs)
    summary["randomness"] = randomness(summary) if configured or planned is None else planned_randomness(runs, planned)
    if select and any(p.get("validation") for p in points):
        try:
            summary["selected"] = select_point(points, select, select_by)
        except NoPointToSelect as err:  # every run diverged or failed: the summary still keeps what the runs measured
            summary["not_selected"] = str(err)
    return summary


def planned_randomness(runs: list[Run], planned: Callable[[Run], dict[str, Any]]) -> dict[str, Any]:
    """What the seeds control, read off the settings the sweep gives each run (``planned``) rather than a resolved
    config: what a summary records when no run finished. A data seed that no config file or argument sets is the
    data module's default, unknown here."""
    settings = [(run.seed, planned(run)) for run in runs]
    configs = [{"seed": seed, "config": yaml.safe_dump({
        "seed_everything": flat.get("seed_everything"),
        "data": {"init_args": {"seed": flat.get("data.init_args.seed")}}})} for seed, flat in settings]
    record = randomness({"runs": configs})
    if not any("data.init_args.seed" in flat for _, flat in settings):
        record["data"] = "unknown"
    return record


def _per_seed(runs: list[Run], kind: str) -> dict[str, dict[int, float]]:
    """``{metric: {seed: value}}`` of the runs' test ``metrics`` or ``validation`` metrics."""
    names = sorted({m for r in runs for m in getattr(r, kind)})
    return {m: {r.seed: getattr(r, kind)[m] for r in runs if m in getattr(r, kind)} for m in names}


def _stats(values: list[float]) -> dict[str, Any]:
    """n, mean and sample std; a non-finite value (a diverged run) makes both NaN or infinite rather than crash
    ``statistics.stdev``."""
    finite = all(math.isfinite(v) for v in values)
    std = (statistics.stdev(values) if finite else math.nan) if len(values) > 1 else None
    return {"n": len(values), "mean": statistics.fmean(values), "std": std}


def git_commit() -> str | None:
    """The commit of the code that ran, ``+dirty`` when tracked files differ from it; None outside git."""
    root = Path(__file__).resolve().parents[3]  # the project: bigmodel/commands/sweep/ -> .
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def finished_runs(summary: dict[str, Any]) -> int:
    return sum(run.get("status") == "done" for run in summary.get("runs", []))


def kept_reason(summary: dict[str, Any], directory: Path, results: bool) -> str | None:
    """Why the summary in ``directory`` stays rather than be replaced by ``summary`` (one line), or None to write it.
    A sweep in which a run failed or did not finish never replaces a summary with more finished runs (a rerun that
    fails keeps the results it could not reproduce; a complete sweep of fewer seeds is what was asked, and replaces);
    ``results`` (``--summary_dir``): a sweep with no finished run writes nothing there at all."""
    finished = finished_runs(summary)
    complete = finished == len(summary["runs"])
    there = directory / "summary.json"
    try:
        before = finished_runs(json.loads(there.read_text(encoding="utf-8"))) if there.is_file() else None
    except (OSError, ValueError):
        before = 0  # unreadable: nothing to keep
    if results and finished == 0:
        return "no run finished: " + (f"kept the summary in {directory} ({before} finished runs)" if before
                                      else f"wrote nothing to {directory}")
    if not complete and before is not None and before > finished:
        return (f"kept the summary in {directory} ({before} finished runs; this sweep finished {finished} of "
                f"{len(summary['runs'])}): rerun the failed seeds, or remove it to write this one")
    return None


def write_summary(summary: dict[str, Any], *directories: Path) -> None:
    texts = dict(zip(SUMMARY_FILES, (json.dumps(summary, indent=1) + "\n", summary_csv(summary),
                                     summary_markdown(summary))))
    for directory in directories:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            (directory / name).write_text(text, encoding="utf-8")


class NoPointToSelect(ValueError):
    """Every grid point's validation metric is non-finite (or missing): none can be chosen."""


def select_point(points: list[dict[str, Any]], metric: str, by: str = "mean") -> dict[str, Any]:
    """The grid point chosen on a validation metric, never a test one: ``by`` "mean" picks the point whose mean is
    best; "seed" picks, seed by seed, that seed's best point. Returns a point (test metrics of the chosen runs) with
    ``selected`` naming what was chosen and on what. Reads only each point's ``validation`` statistics.

    A non-finite value (a diverged run's NaN) is never best: its point (by mean) or that seed's run there (by seed) is
    left out, and the record says so. By mean, only the points with the most finished seeds compete (a point whose
    other seeds failed must not win on one lucky seed); the record gives n per point and what was left out. By seed,
    a seed that has no run to choose is failed or unfinished in the selection too, and one that chose among fewer
    points is recorded."""
    if by not in ("mean", "seed"):
        raise ValueError(f"select by {by!r}: 'mean' or 'seed'")
    if not metric.startswith("val"):
        raise ValueError(f"select on {metric!r}: a validation metric (val/...); a test metric cannot choose a point")
    sign = 1 if lower_is_better(metric) else -1
    points = [dict(p, validation=_by_seed(p.get("validation", {})), metrics=_by_seed(p["metrics"])) for p in points]
    candidates = [p for p in points if metric in p["validation"]]
    if not candidates:
        have = sorted({m for p in points for m in p["validation"]})
        raise ValueError(f"no grid point has {metric!r} on validation; it has {', '.join(have) or 'nothing'}")
    record = {"metric": metric, "goal": "min" if sign > 0 else "max", "by": by}
    if by == "mean":
        return _select_by_mean(candidates, metric, sign, record)
    return _select_by_seed(points, candidates, metric, sign, record)


def _select_by_mean(candidates: list[dict[str, Any]], metric: str, sign: int, record: dict[str, Any]) -> dict:
    """The best finite mean among the points with the most finished seeds."""
    stats = {p["point"]: p["validation"][metric] for p in candidates}
    left_out = {name: f"{metric} mean {s['mean']}" for name, s in stats.items() if not math.isfinite(s["mean"])}
    most = max((s["n"] for name, s in stats.items() if name not in left_out), default=0)
    left_out |= {name: f"n={s['n']} of the {most} finished seeds the others have" for name, s in stats.items()
                 if name not in left_out and s["n"] < most}
    eligible = [p for p in candidates if p["point"] not in left_out]
    if not eligible:
        raise NoPointToSelect(f"no grid point has a finite {metric}: " + "; ".join(f"{k}: {v}" for k, v in left_out.items()))
    best = min(eligible, key=lambda p: sign * stats[p["point"]]["mean"])
    record |= {"point": best["point"], "n": {name: s["n"] for name, s in stats.items()}}
    return dict(best, point="selected", selected=record | ({"left_out": left_out} if left_out else {}))


def _select_by_seed(points: list[dict[str, Any]], candidates: list[dict[str, Any]], metric: str, sign: int,
                    record: dict[str, Any]) -> dict:
    """Each seed's best point among its runs with a finite value; a seed with none is failed (or unfinished)."""
    seeds = list(dict.fromkeys(seed_key(s) for p in points for s in p["seeds"]))
    chosen: dict[str, dict[str, Any]] = {}
    failed: dict[int, str] = {}
    unfinished: dict[int, str] = {}
    incomplete: dict[str, str] = {}
    for seed in seeds:
        values = {p["point"]: p["validation"][metric]["values"].get(seed) for p in candidates}
        have = [p for p in candidates if values[p["point"]] is not None and math.isfinite(values[p["point"]])]
        missing = {p["point"]: _why_missing(p, seed, values.get(p["point"]), metric) for p in points
                   if p not in have}
        if have:
            chosen[seed] = min(have, key=lambda p: sign * values[p["point"]])
            if missing:
                incomplete[seed] = (f"chose among {len(have)} of {len(points)} points; "
                                    + "; ".join(f"{k}: {v}" for k, v in missing.items()))
            continue
        why = "; ".join(f"{k}: {v}" for k, v in missing.items())
        (unfinished if all(_unfinished(p, seed) for p in points) else failed)[int(seed)] = why
    if not chosen:
        raise NoPointToSelect(f"no seed has a finite {metric} at any grid point")
    metrics = {}
    for name in dict.fromkeys(m for p in chosen.values() for m in p["metrics"]):
        values = {s: p["metrics"][name]["values"][s] for s, p in chosen.items()
                  if s in p["metrics"].get(name, {}).get("values", {})}
        metrics[name] = _stats(list(values.values())) | {"values": values}
    record |= {"points": {s: p["point"] for s, p in chosen.items()}} | ({"incomplete": incomplete} if incomplete else {})
    return {"point": "selected", "grid": {}, "seeds": [int(s) for s in seeds], "metrics": metrics,
            "wall_seconds": None, "parameters": None, "fitted": True, "failed": failed, "unfinished": unfinished,
            "selected": record}


def _failure(point: dict[str, Any], seed: str, kind: str) -> str | None:
    """The point's recorded failure (``kind`` "failed" or "unfinished") of ``seed``."""
    return seed_value(point.get(kind) or {}, seed)


def _unfinished(point: dict[str, Any], seed: str) -> bool:
    return _failure(point, seed, "unfinished") is not None


def _why_missing(point: dict[str, Any], seed: str, value: float | None, metric: str) -> str:
    """Why ``point`` has no usable ``metric`` for ``seed``: its run failed, did not finish, or gave a non-finite value."""
    if value is not None:
        return f"{metric} {value}"
    for kind in ("failed", "unfinished"):
        why = _failure(point, seed, kind)
        if why is not None:
            return f"{kind} ({why})"
    return f"no {metric}"


def _by_seed(metrics: dict[str, Any]) -> dict[str, Any]:
    """Per-seed values keyed by the seed as text, as a summary.json read back has them."""
    return {m: dict(stats, values={seed_key(k): v for k, v in stats["values"].items()}) for m, stats in metrics.items()}
