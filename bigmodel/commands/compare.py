"""``bigmodel compare``: is method A better than B, and by how much -- from sweep summaries, seed by seed.

    bigmodel compare experiments/results/sst2_budget_full experiments/results/sst2_budget_lora [...] \\
        [--metric test/acc] [--point NAME]

The first summary (a ``summary.json`` or the directory holding it) is the reference; every other one is compared with
it on the primary metric: the one ``--metric`` names (repeatable; ``--metric all``: every test metric they share),
else the test counterpart of the reference's checkpoint monitor (``val/acc`` -> ``test/acc``) as its recorded config
says. A grid sweep is compared at ``--point``, else at the point its validation selected; its row names that point
(``lora (lr=3e-3, selected on val/acc) − full``) and the notes how it was chosen. Each row: the mean difference (other − reference), its sample std, a 95 % t-interval, n, a verdict ("<other>
better", "<reference> better", "not resolved at n seeds", or "no spread: cannot assess" when every seed gives the
same difference; "not comparable: tested on different data" when the data module or its test set differ,
``TEST_DATA``) and the seeds per sweep a difference of the observed size would need at the observed spread for
80 % power (two-sided 5 %, noncentral t; post hoc: from the observed effect, which overstates a noisy one). Sweeps
whose seeds pair up (at least 2 seed values in common, each controlling the same randomness) are compared seed by
seed on the seeds both have (a paired t-interval; n reads ``3 (of 4 vs 3)`` and the pairing column names the seeds
left out when one sweep has more); otherwise Welch's interval is used (n ``4 vs 3``), and the table says so. Under the
table, a note per pair of sweeps that differ outside the model -- the trainer's budget and schedule, the data, the
checkpoint each seed was tested on (``held_settings``, from each side's recorded run config) -- names those settings:
the difference may come from them rather than from the method.

The intervals are 95 % per comparison, unadjusted, and cover seed-to-seed variance on a fixed test set: the test
set's own sampling error is not in them. With several rows the last column gives Holm-adjusted verdicts (family:
every row of the table).

Also here: what randomness a sweep's seed controls (``randomness``). Choosing a grid point on a validation metric is
the sweep's (``bigmodel.commands.sweep.summary.select_point``).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import yaml

from bigmodel.commands.held_settings import different_data, held_settings, setting_differences, settings_note
from bigmodel.commands.intervals import MANY_SEEDS, Difference, holm, paired, welch
from bigmodel.commands.summary_notes import describe_randomness, describe_selection, point_label, randomness


def load(path: str | Path) -> dict[str, Any]:
    """A ``summary.json``, or the sweep (or ``--summary_dir``) directory holding one."""
    path = Path(path)
    file = path / "summary.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no summary.json there; give a sweep's --out or --summary_dir directory, or "
                                "its summary.json")
    return json.loads(file.read_text(encoding="utf-8"))


def point_of(summary: dict[str, Any], name: str | None = None, where: str = "the summary",
             key: str = "'point:'") -> dict[str, Any]:
    """The named grid point; without a name, the point the sweep selected on validation, or its only point.
    ``key``: how the caller names a point (a results row's ``point:``, compare's ``--point``)."""
    points = {p["point"]: p for p in summary["points"]}
    if name is None and summary.get("selected"):
        return summary["selected"]
    if name is None and len(points) == 1:
        return next(iter(points.values()))
    if name == "selected" and summary.get("selected"):
        return summary["selected"]
    if name not in points:
        raise ValueError(f"{where}: say which grid point with {key}, one of {', '.join(points)}")
    return points[name]


def finished_point(summary: dict[str, Any], name: str | None = None, where: str = "the summary",
                   key: str = "'point:'") -> dict[str, Any]:
    """``point_of``, refused with one line when none of its seeds finished (every run interrupted or failed): say
    so, and that the sweep's own command resumes it, rather than 'no metric in common'."""
    point = point_of(summary, name, where, key)
    if point["metrics"]:
        return point
    kinds = {"interrupted or not started": point.get("unfinished") or {}, "failed": point.get("failed") or {}}
    seeds = "; ".join(f"seed{'s' * (len(v) > 1)} {', '.join(map(str, v))} {kind}" for kind, v in kinds.items() if v)
    raise ValueError(f"{where}: no finished run{f' ({seeds})' if seeds else ''}; rerun its sweep command to resume "
                     f"it: `{summary.get('command') or 'bigmodel sweep ...'}`")


def compare_points(metric: str, other: dict[str, Any], reference: dict[str, Any], pair: bool) -> Difference:
    """``other − reference`` on ``metric``: paired over the seeds both have a value for when ``pair`` (and at least
    2 do: with fewer, a paired interval is undefined), else Welch's."""
    a, b = (p["metrics"].get(metric) for p in (other, reference))
    if a is None or b is None:
        where = "neither sweep" if a is None and b is None else "only the reference" if a is None else "only the other"
        have = sorted(set(other["metrics"]) & set(reference["metrics"]))
        raise ValueError(f"{metric}: measured in {where}; both have {', '.join(have) or 'no metric in common'}")
    if pair and len(a["values"].keys() & b["values"].keys()) >= 2:
        return paired(metric, a["values"], b["values"])
    return welch(metric, list(a["values"].values()), list(b["values"].values()))


def pairable(other: dict[str, Any], reference: dict[str, Any], a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """None when the two sweeps pair up seed by seed; else why they do not (then Welch's interval is used)."""
    if randomness(a) != randomness(b):
        return "their seeds control different randomness"
    if "seed" in ((other.get("selected") or {}).get("by"), (reference.get("selected") or {}).get("by")):
        return "a grid point chosen per seed"
    if len(set(map(str, other["seeds"])) & set(map(str, reference["seeds"]))) < 2:
        return "different seeds"  # a seed or two more on one side still pairs: on the seeds both have
    return None


def number(value: float, scale: float = 1.0, digits: int | None = None) -> str:
    """``+0.0123``, ``−1.2``; a value that rounds to zero at these places is ``0.0``, never ``−0.0``."""
    value *= scale
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    places = digits if digits is not None else (4 if abs(value) < 10 else 2)
    if round(value, places) == 0:
        return f"{0:.{places}f}"
    return f"{value:+.{places}f}".replace("-", "−")


def _places(bounds: list[float], digits: int | None) -> int | None:
    """``digits`` (None: ``number``'s default), or up to 3 places more until each nonzero bound shows a nonzero
    digit, so that its sign shows: ``[−0.03, +0.95]``, not ``[0.0, +1.0]``."""
    finite = [abs(v) for v in bounds if math.isfinite(v) and v != 0]
    places = digits if digits is not None else 4
    if digits is None and all(v >= 1e-4 for v in finite):
        return None
    most = places + 3
    while places < most and any(round(v, places) == 0 for v in finite):
        places += 1
    return places


def interval(d: Difference, scale: float = 1.0, digits: int | None = None) -> str:
    """``−16.4 [−19.3, −13.5]``; with more places where a bound would otherwise round to zero (``+0.46 [−0.03,
    +0.95]``, not ``+0.5 [−0.0, +1.0]``)."""
    places = _places([d.low * scale, d.high * scale], digits)
    return f"{number(d.mean, scale, places)} [{number(d.low, scale, places)}, {number(d.high, scale, places)}]"


def row(d: Difference, other: str, reference: str, why_unpaired: str | None = None, scale: float = 1.0,
        digits: int | None = None, not_comparable: str | None = None,
        labels: tuple[str, str] | None = None) -> list[str]:
    """A table row; ``not_comparable`` (``different_data``) replaces the verdict and the seeds a difference needs;
    ``labels``: how the comparison column names the two (with their grid points), where not by their names."""
    how = ("paired" + _left_out(d, other, reference) if d.paired
           else f"unpaired ({why_unpaired or 'fewer than 2 seeds with a result in both'}): Welch")
    std = "–" if d.std is None else f"{d.std * scale:.4g}"
    needed = "–" if d.seeds_needed is None else f"> {MANY_SEEDS}" if d.seeds_needed > MANY_SEEDS else str(d.seeds_needed)
    return [" − ".join(labels or (other, reference)), d.metric, interval(d, scale, digits), std, d.n_text, how,
            not_comparable or d.verdict(other, reference), "–" if not_comparable else needed]


def _left_out(d: Difference, other: str, reference: str) -> str:
    """`` on the seeds both have (left out: seed 3 of b)``; empty when every seed paired."""
    parts = [f"seed{'s' * (len(seeds) > 1)} {', '.join(seeds)} of {name}"
             for seeds, name in zip(d.left_out, (other, reference)) if seeds]
    return f" on the seeds both have (left out: {'; '.join(parts)})" if parts else ""


def delta(point: dict[str, Any], summary: dict[str, Any], reference: dict[str, Any], metric: str, label: str,
          scale: float = 1.0, digits: int | None = None) -> str:
    """A results-table cell: ``−16.5 [−19.6, −13.4] vs full fine-tuning (paired, n=3): full fine-tuning better``, and
    the settings note when the two sweeps differ outside the model."""
    reference_point = finished_point(reference, None, label)
    why = pairable(point, reference_point, summary, reference)
    d = compare_points(metric, point, reference_point, why is None)
    how = f"paired, n={d.n_text}" if d.paired else f"Welch, {why or 'fewer than 2 seeds with a result in both'}"
    differences = setting_differences(held_settings(summary, point), held_settings(reference, reference_point))
    note = f"; {settings_note(differences)}" if differences else ""
    verdict = different_data(differences) or d.verdict("this row", label)
    return f"{interval(d, scale, digits)} vs {label} ({how}): {verdict}{note}"


HEADER = ("comparison", "metric", "mean difference [95 % CI]", "std of differences", "n", "pairing", "verdict",
          "seeds for 80 % power at the observed effect (post hoc)")
HOLM = "verdict, Holm-adjusted over the table"
SCOPE = ("Intervals and verdicts: 95 % per comparison, unadjusted; they cover the seed-to-seed variance on a fixed "
         "test set, not the test set's own sampling error.")


def primary_metric(summary: dict[str, Any]) -> tuple[str, str] | None:
    """The test counterpart of the checkpoint monitor the sweep's runs were recorded with (``val/acc`` ->
    ``test/acc``), and the monitor; None when no run's config names a validation monitor."""
    for run in summary.get("runs", []):
        config = yaml.safe_load(run["config"]) if run.get("config") else None
        monitor = ((config or {}).get("checkpoint") or {}).get("monitor")
        if isinstance(monitor, str) and monitor.startswith("val/"):
            return "test/" + monitor.removeprefix("val/"), monitor
    return None


def chosen_metrics(metrics: list[str] | None, reference: dict[str, Any], where: str) -> tuple[list[str] | None, str]:
    """The metrics to compare (None: every test metric the two share) and a line saying why those."""
    if metrics and "all" in metrics:
        return None, "Metrics: every test metric both share (--metric all)."
    if metrics:
        return metrics, f"Metric{'s' * (len(metrics) > 1)}: {', '.join(metrics)} (--metric)."
    primary = primary_metric(reference)
    if primary is None:
        raise ValueError(f"{where}: its runs record no checkpoint monitor to take the primary metric from; name one "
                         "with --metric (e.g. --metric test/acc), or --metric all")
    return [primary[0]], (f"Metric: {primary[0]}, the test counterpart of the reference's checkpoint monitor "
                          f"{primary[1]} (--metric names others; --metric all: every shared test metric).")


def table(paths: list[str], metrics: list[str] | None = None, point: str | None = None, percent: bool = False) -> str:
    """The Markdown table: every summary after the first against the first, on the primary metric (``metrics``:
    those; ``["all"]``: each test metric they share), with Holm-adjusted verdicts when it has several rows."""
    if len(paths) < 2:
        raise ValueError("give a reference sweep and at least one to compare with it")
    summaries = [load(p) for p in paths]
    names = [_name(p) for p in paths]
    # --point names a grid point; a sweep without a grid (one point) is compared on its own
    points = [finished_point(s, None if point and len(s["points"]) == 1 and s["points"][0]["point"] != point else
                             point, p, "--point") for s, p in zip(summaries, paths)]
    metrics, which = chosen_metrics(metrics, summaries[0], paths[0])
    notes = dict.fromkeys(f"- {n}: {describe_randomness(randomness(s))}" for n, s in zip(names, summaries))
    # a grid sweep's row names its point (the one validation selected, or --point's); the notes how it was chosen
    labels = [f"{n} ({point_label(p)})" if point_label(p) else n for n, p in zip(names, points)]
    chosen = [f"- {n}: {line}" for n, p in zip(names, points) if p.get("point") == "selected" and p.get("selected")
              for line in describe_selection(p["selected"])]
    scale, digits = (100.0, 1) if percent else (1.0, None)
    reference_settings = held_settings(summaries[0], points[0])
    differing = [(name, setting_differences(held_settings(summary, other), reference_settings))
                 for name, summary, other in zip(names[1:], summaries[1:], points[1:])]
    warnings = [f"note ({name} vs {names[0]}): {settings_note(d)}" for name, d in differing if d]
    rows: list[tuple[Difference, str, str | None, str | None, str]] = []
    for (name, d), summary, other, label in zip(differing, summaries[1:], points[1:], labels[1:]):
        why = pairable(other, points[0], summary, summaries[0])
        shared = [m for m in other["metrics"] if m in points[0]["metrics"] and m.startswith("test/")]
        rows += [(compare_points(metric, other, points[0], why is None), name, why, different_data(d), label)
                 for metric in metrics or shared]
    adjust = len(rows) > 1
    family = [d for d, _, _, apart, _ in rows if not apart]  # a row without a verdict is no test of the family
    decisions = iter(holm(family))
    header = HEADER + ((HOLM,) if adjust else ())
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for d, name, why, apart, label in rows:
        held = apart or d.verdict(name, names[0], next(decisions))
        cells = row(d, name, names[0], why, scale, digits, apart, (label, labels[0])) + ([held] if adjust else [])
        lines.append("| " + " | ".join(cells) + " |")
    apart = " with a verdict" if len(family) < len(rows) else ""
    scope = [which, SCOPE + (f" The last column's verdicts hold together (Holm, familywise 5 % over the {len(family)} "
                             f"comparison{'s' * (len(family) != 1)}{apart})." if adjust and family else "")]
    grid = ["", "Grid points:", *chosen] if chosen else []
    return "\n".join(lines + (["", *warnings] if warnings else []) + ["", *scope, "", "Seeds:", *notes] + grid)


def _name(path: str) -> str:
    path_ = Path(path)
    return (path_.parent if path_.name == "summary.json" else path_).name or str(path)


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="bigmodel compare", allow_abbrev=False, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("summaries", nargs="+", help="the reference sweep first, then the ones to compare with it")
    p.add_argument("--metric", action="append",
                   help="a test metric (repeatable; 'all': every one they share; default: the test counterpart of "
                        "the reference's checkpoint monitor, val/acc -> test/acc)")
    p.add_argument("--point", help="the grid point of the sweeps with a grid (default: the one each selected on "
                   "validation); a sweep without a grid is compared on its only point")
    p.add_argument("--percent", action="store_true", help="differences in percentage points (0.012 -> 1.2)")
    args = p.parse_args(argv)
    print(table(args.summaries, args.metric, args.point, args.percent))
