"""A sweep's summary: per grid point, every test metric as mean ± sample std with n and the per-seed values, with
what reproduces it (the command, each run's resolved config, the code's commit, the device and versions); written
as ``summary.{json,csv,md}`` (rendered by ``results``, which renders the results table from them too)."""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bigmodel.commands.compare import lower_is_better, randomness
from bigmodel.commands.results import summary_csv, summary_markdown
from bigmodel.commands.sweep.plan import Run


SUMMARY_FILES = ("summary.json", "summary.csv", "summary.md")


def summarise(runs: list[Run], command: str, fitted: bool = True, select: str | None = None,
              select_by: str = "mean") -> dict[str, Any]:
    """Per grid point: each test metric's mean, sample std (n - 1; none for n = 1) and per-seed values, the
    parameter counts and the wall time per run (``fitted`` False: the runs only tested, nothing was trained).
    ``select``: the validation metric that chooses a grid point (``select_point``), recorded as ``selected``."""
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
            "parameters": next((r.parameters for r in done if r.parameters), None), "fitted": fitted,
            "failed": {r.seed: r.error for r in group if r.status == "failed"},
            "unfinished": {r.seed: r.error or r.status for r in group if r.status in ("interrupted", "pending")},
        })
    devices = sorted({r.device for r in runs if r.device})
    versions = next((r.versions for r in runs if r.versions), {})
    summary = {
        "command": command, "date": time.strftime("%Y-%m-%d", time.gmtime()), "code": git_commit(),
        "devices": devices, "versions": versions, "points": points,
        "runs": [asdict(r) for r in runs],
    }
    summary["randomness"] = randomness(summary)
    if select and any(p.get("validation") for p in points):
        summary["selected"] = select_point(points, select, select_by)
    return summary


def _per_seed(runs: list[Run], kind: str) -> dict[str, dict[int, float]]:
    """``{metric: {seed: value}}`` of the runs' test ``metrics`` or ``validation`` metrics."""
    names = sorted({m for r in runs for m in getattr(r, kind)})
    return {m: {r.seed: getattr(r, kind)[m] for r in runs if m in getattr(r, kind)} for m in names}


def _stats(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else None}


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


def select_point(points: list[dict[str, Any]], metric: str, by: str = "mean") -> dict[str, Any]:
    """The grid point chosen on a validation metric, never a test one: ``by`` "mean" picks the point whose mean is
    best; "seed" picks, seed by seed, that seed's best point. Returns a point (test metrics of the chosen runs) with
    ``selected`` naming what was chosen and on what. Reads only each point's ``validation`` statistics."""
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
        best = min(candidates, key=lambda p: sign * p["validation"][metric]["mean"])
        return dict(best, point="selected", selected=record | {"point": best["point"]})
    chosen: dict[str, dict[str, Any]] = {}
    for seed in dict.fromkeys(s for p in candidates for s in p["validation"][metric]["values"]):
        have = [p for p in candidates if seed in p["validation"][metric]["values"]]
        chosen[seed] = min(have, key=lambda p: sign * p["validation"][metric]["values"][seed])
    metrics = {}
    for name in dict.fromkeys(m for p in chosen.values() for m in p["metrics"]):
        values = {s: p["metrics"][name]["values"][s] for s, p in chosen.items()
                  if s in p["metrics"].get(name, {}).get("values", {})}
        metrics[name] = {"n": len(values), "mean": statistics.fmean(values.values()),
                         "std": statistics.stdev(values.values()) if len(values) > 1 else None, "values": values}
    return {"point": "selected", "grid": {}, "seeds": [int(s) for s in chosen], "metrics": metrics,
            "wall_seconds": None, "parameters": None, "fitted": True, "failed": {}, "unfinished": {},
            "selected": record | {"points": {s: p["point"] for s, p in chosen.items()}}}


def _by_seed(metrics: dict[str, Any]) -> dict[str, Any]:
    """Per-seed values keyed by the seed as text, as a summary.json read back has them."""
    return {m: dict(stats, values={str(k): v for k, v in stats["values"].items()}) for m, stats in metrics.items()}
