"""``bigmodel sweep``: one experiment over seeds (and a small grid), each run fitted then tested in a directory of its
own, summarised as mean ± std so that a number in a README can be traced back to the runs that made it.

    bigmodel sweep -c experiments/quickstart/digits_vit.yaml --seeds 0 1 2 \\
        [--grid model.init_args.lr=1e-3,3e-3] [--out runs/sweeps/digits_vit] \\
        [--summary_dir experiments/results/digits_vit] [--parallel gpus] [any fit override, e.g. --trainer.max_epochs 5]

Layout: ``<out>/<point>/seed<k>/`` holds ``checkpoints/``, ``fit/`` (TensorBoard logs and the resolved
``config.yaml``), ``test/test_metrics.json``, ``fit.log`` and ``test.log`` (a grid: also ``validate/``, the pass on the
tested checkpoint whose ``--select`` metric chooses the point reported as ``selected``); ``<out>/summary.{json,csv,md}`` (also
written to ``--summary_dir``) hold every test metric per grid point as mean ± sample std with n, the per-seed
values, wall times, failed seeds with their one-line error, the exact command, each run's resolved config, the code's
git commit, the device and the versions.

Each run is a process of its own (a crash or an out-of-memory kill fails that seed only, and is reported). Running the
same sweep again skips seeds whose test result exists and resumes a killed fit from its ``last.ckpt``. The experiment's
logger must be Lightning's TensorBoard or CSV logger (the default): the sweep sets its directory per run.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bigmodel.utils.formatting import format_value, mean_std, trained_parameters
from bigmodel.commands.compare import describe_summary, randomness
from bigmodel.commands.compare import select as select_point
from bigmodel.run.directory import METRICS_FILE

SUMMARY_FILES = ("summary.json", "summary.csv", "summary.md")
_INTERRUPTED = (130, 143)  # a run stopped by Ctrl-C / SIGTERM: its last.ckpt is kept and the next sweep resumes it


@dataclass
class Run:
    point: str
    grid: dict[str, str]
    seed: int
    directory: str
    status: str = "pending"  # done | failed | interrupted | pending
    metrics: dict[str, float] = field(default_factory=dict)
    validation: dict[str, float] = field(default_factory=dict)  # a grid sweep's validate pass: what selects a point
    seconds: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    device: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    ckpt_path: str | None = None
    config: str | None = None  # the fit's resolved config.yaml
    parameters: dict[str, int] = field(default_factory=dict)  # total, trainable (as the test run built the model)

    @property
    def metrics_file(self) -> Path:
        return Path(self.directory, "test", METRICS_FILE.format(stage="test"))

    @property
    def validation_file(self) -> Path:
        return Path(self.directory, "validate", METRICS_FILE.format(stage="validate"))

    @property
    def checkpoints(self) -> Path:
        return Path(self.directory, "checkpoints")


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    """``key=v1,v2`` items -> ``[(key, [v1, v2])]``; a key given twice is an error."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip().removeprefix("--")
        if not sep or not key or not values:
            raise ValueError(f"--grid {item!r}: write KEY=VALUE1,VALUE2 (e.g. model.init_args.lr=1e-4,3e-4)")
        if key in grid:
            raise ValueError(f"--grid {key} is given twice; list all its values in one --grid {key}=a,b")
        grid[key] = [v.strip() for v in values.split(",")]
    return list(grid.items())


def point_name(point: dict[str, str]) -> str:
    """A directory name for a grid point: ``lr=0.001_warmup=0.1``; ``default`` without a grid."""
    if not point:
        return "default"
    parts = [f"{key.rsplit('.', 1)[-1]}={value}" for key, value in point.items()]
    return re.sub(r"[^A-Za-z0-9._=+-]+", "-", "_".join(parts))[:120]


def plan(out: Path, grid: list[tuple[str, list[str]]], seeds: list[int]) -> list[Run]:
    keys = [key for key, _ in grid]
    runs = []
    for values in itertools.product(*(values for _, values in grid)):
        point = dict(zip(keys, values))
        name = point_name(point)
        runs += [Run(name, point, seed, str(out / name / f"seed{seed}")) for seed in seeds]
    names = [r.point for r in runs]
    if len(set(names)) * len(seeds) != len(names):
        raise ValueError("two grid points get the same directory name; make their values differ in letters or digits")
    return runs


class Sweep:
    """Runs the plan (``parallel`` runs at a time, each pinned to one of ``gpus`` when given), then summarises."""

    def __init__(self, configs: list[str], overrides: list[str], runs: list[Run], parallel: int = 1,
                 gpus: list[str] | None = None, test_ckpt: str = "best", validate: bool = False,
                 vary: str = "model", model_seed: int = 0) -> None:
        self.configs, self.overrides, self.runs = configs, overrides, runs
        self.parallel, self.test_ckpt, self.validate = max(1, parallel), test_ckpt, validate
        self.vary, self.model_seed = vary, model_seed
        self._slots = list(gpus or [None] * self.parallel)[: self.parallel]
        self._free = list(self._slots)
        self._lock = threading.Lock()
        self._children: set[subprocess.Popen] = set()
        self.stop_signal: int | None = None

    def arguments(self, run: Run, stage: str) -> list[str]:
        point_dir = str(Path(run.directory).parent)
        overrides = [o.replace("{seed}", str(run.seed)) for o in self.overrides]  # e.g. a data seed per run
        args = [stage] + [a for c in self.configs for a in ("-c", c)] + overrides
        args += [f"--{key}={value}" for key, value in run.grid.items()]
        if self.vary in ("data", "both"):
            args.append(f"--data.init_args.seed={run.seed}")
        return args + [
            f"--seed_everything={run.seed if self.vary != 'data' else self.model_seed}",
            f"--trainer.logger.init_args.save_dir={point_dir}",
            f"--trainer.logger.init_args.name={Path(run.directory).name}",
            f"--trainer.logger.init_args.version={stage}",
            f"--checkpoint.dirpath={run.checkpoints}",
        ]

    def execute(self) -> None:
        previous = signal.signal(signal.SIGTERM, self._on_sigterm) if _main_thread() else None
        try:
            with ThreadPoolExecutor(self.parallel) as pool:
                for future in [pool.submit(self._run, run) for run in self.runs]:
                    future.result()
        except KeyboardInterrupt:  # the runs got the Ctrl-C too (same process group): they save and stop
            self.stop_signal = signal.SIGINT
            self._wait_children()
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def _run(self, run: Run) -> None:
        stages = ("validate",) * self.validate + ("test",)
        stages = stages if self.test_ckpt == "none" else ("fit", *stages)
        if run.metrics_file.is_file() and (not self.validate or run.validation_file.is_file()):
            self._collect(run)
            run.status = "done"
            return
        with self._lock:
            slot = self._free.pop()
        try:
            for stage in stages:
                if self.stop_signal is not None:
                    run.status = "interrupted" if run.status != "failed" else run.status
                    return
                if stage == "fit" and self._fit_finished(run) or stage == "validate" and run.validation_file.is_file():
                    continue
                if not self._stage(run, stage, slot):
                    return
            self._collect(run)
            run.status = "done"
        finally:
            with self._lock:
                self._free.append(slot)

    def _stage(self, run: Run, stage: str, slot: str | None) -> bool:
        args = self.arguments(run, stage)
        if stage == "fit" and (run.checkpoints / "last.ckpt").is_file():
            args.append("--ckpt_path=last")  # a run stopped earlier continues exactly where it was
        if stage in ("validate", "test") and self.test_ckpt != "none":  # the same weights: selected on, then tested
            ckpt = run.checkpoints / f"{self.test_ckpt}.ckpt"
            ckpt = ckpt if ckpt.is_file() else run.checkpoints / "last.ckpt"
            args.append(f"--ckpt_path={ckpt}")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot
        Path(run.directory).mkdir(parents=True, exist_ok=True)
        log = Path(run.directory, f"{stage}.log")
        print(f"sweep: {run.point} seed {run.seed}: {stage}" + (f" on GPU {slot}" if slot else ""), flush=True)
        start = time.perf_counter()
        with open(log, "w", encoding="utf-8") as out:
            child = subprocess.Popen([sys.executable, "-m", "bigmodel", *args], stdout=out, stderr=subprocess.STDOUT,
                                     env=env)
            with self._lock:
                self._children.add(child)
            code = child.wait()
            with self._lock:
                self._children.discard(child)
        run.seconds[stage] = round(time.perf_counter() - start, 1)
        if code == 0:
            if stage == "fit":
                Path(run.directory, ".fit_done").write_text(json.dumps(run.seconds), encoding="utf-8")
            return True
        run.status = "interrupted" if code in _INTERRUPTED else "failed"
        run.error = f"{stage} exit {code}: {_last_line(log)}"
        print(f"sweep: {run.point} seed {run.seed}: {run.error} (log: {log})", flush=True)
        return False

    def _fit_finished(self, run: Run) -> bool:
        done = Path(run.directory, ".fit_done")
        if not done.is_file() or not any(run.checkpoints.glob("*.ckpt")):
            return False
        run.seconds.update(json.loads(done.read_text(encoding="utf-8")))
        return True

    def _collect(self, run: Run) -> None:
        record = json.loads(run.metrics_file.read_text(encoding="utf-8"))
        run.metrics = record["metrics"]
        run.device, run.versions, run.ckpt_path = record.get("device"), record.get("versions", {}), record.get("ckpt_path")
        run.parameters = record.get("parameters", {})
        if run.validation_file.is_file():
            run.validation = json.loads(run.validation_file.read_text(encoding="utf-8"))["metrics"]
        done = Path(run.directory, ".fit_done")
        if "fit" not in run.seconds and done.is_file():
            run.seconds.update(json.loads(done.read_text(encoding="utf-8")))
        config = Path(run.directory, "fit" if self.test_ckpt != "none" else "test", "config.yaml")
        run.config = config.read_text(encoding="utf-8") if config.is_file() else None

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.stop_signal = signal.SIGTERM
        with self._lock:
            for child in self._children:
                child.send_signal(signal.SIGTERM)  # each run saves last.ckpt at its step and exits 143

    def _wait_children(self) -> None:
        while True:
            with self._lock:
                children = list(self._children)
            if not children:
                return
            for child in children:
                try:
                    child.wait()
                except KeyboardInterrupt:
                    child.kill()  # a second Ctrl-C: stop now


def summarise(runs: list[Run], command: str, fitted: bool = True, select: str | None = None,
              select_by: str = "mean") -> dict[str, Any]:
    """Per grid point: each test metric's mean, sample std (n - 1; none for n = 1) and per-seed values, the
    parameter counts and the wall time per run (``fitted`` False: the runs only tested, nothing was trained).
    ``select``: the validation metric that chooses a grid point (``compare.select``), recorded as ``selected``."""
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
    root = Path(__file__).resolve().parents[2]  # the project
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def render_markdown(summary: dict[str, Any]) -> str:
    lines = ["# Sweep summary", "", f"    {summary['command']}", "",
             f"Code {summary['code'] or 'not in git'}; {', '.join(summary['devices']) or 'device unknown'}; "
             + ", ".join(f"{k} {v}" for k, v in summary["versions"].items()) + f"; {summary['date']}.", ""]
    lines += [f"{line}\n" for line in describe_summary(summary)]
    for point in summary["points"]:
        seeds = point["seeds"]
        lines += [f"## {point['point']}", ""] if point["grid"] else []
        lines += ["| metric | mean ± std (n) | " + " | ".join(f"seed {s}" for s in seeds) + " |",
                  "|---|---|" + "---|" * len(seeds)]
        for metric, stats in point["metrics"].items():
            per_seed = [format_value(stats["values"].get(s)) for s in seeds]
            lines.append(f"| {metric} | {mean_std(stats)} | " + " | ".join(per_seed) + " |")
        if point["wall_seconds"]:
            lines.append(f"| wall time, fit + test (s) | {mean_std(point['wall_seconds'])} |" + " |" * len(seeds))
        if point.get("parameters"):
            lines.append(f"| parameters trained / total | {trained_parameters(point)} |" + " |" * len(seeds))
        lines.append("")
        for kind in ("failed", "unfinished"):
            for seed, why in point[kind].items():
                lines.append(f"- seed {seed} {kind}: {why}")
        if point["failed"] or point["unfinished"]:
            lines.append("")
    return "\n".join(lines)


def render_csv(summary: dict[str, Any]) -> str:
    runs = summary["runs"]
    metrics = sorted({m for r in runs for m in r["metrics"]})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["point", "seed", "status", "fit_s", "test_s", *metrics, "error"])
    for r in runs:
        writer.writerow([r["point"], r["seed"], r["status"], r["seconds"].get("fit", ""), r["seconds"].get("test", ""),
                         *(r["metrics"].get(m, "") for m in metrics), r["error"] or ""])
    return out.getvalue()


def write_summary(summary: dict[str, Any], *directories: Path) -> None:
    texts = {"summary.json": json.dumps(summary, indent=1) + "\n", "summary.csv": render_csv(summary),
             "summary.md": render_markdown(summary)}
    for directory in directories:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            (directory / name).write_text(text, encoding="utf-8")


def project_path(argument: str) -> str:
    """A path argument (or ``--key=path``) relative to the working directory, the project root, so that a summary
    holds no absolute path of the machine that ran it (a reader runs its command as written)."""
    key, sep, value = argument.rpartition("=") if argument.startswith("-") else ("", "", argument)
    if not os.path.isabs(value):
        return argument
    return key + sep + os.path.relpath(value)


def visible_gpus() -> list[str]:
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def _last_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    return lines[-1][:500] if lines else "no output"


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bigmodel sweep", allow_abbrev=False,
                                description="Fit and test one experiment per seed (x grid point); summarise.",
                                epilog="Any other argument (e.g. --trainer.max_epochs 5) is passed to every fit and test.")
    p.add_argument("-c", "--config", action="append", required=True, help="experiment YAML (repeatable, as for fit)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help="a setting to vary (repeatable)")
    p.add_argument("--out", help="sweep directory (default: runs/sweeps/<first config's name>)")
    p.add_argument("--summary_dir", help="also write summary.{json,csv,md} here (e.g. experiments/results/<name>)")
    p.add_argument("--parallel", default="1",
                   help="runs at a time (default 1); 'gpus': one run per visible GPU, each seeing only its GPU")
    p.add_argument("--select", default="val/loss", metavar="METRIC",
                   help="with --grid: the validation metric that chooses the point to report (default val/loss; "
                        "each run is validated on the checkpoint it is tested with; test metrics never choose)")
    p.add_argument("--select_by", choices=("mean", "seed"), default="mean",
                   help="with --grid: the point with the best mean (default), or each seed's best point")
    p.add_argument("--vary", choices=("model", "data", "both"), default="model",
                   help="what each seed sets: seed_everything (model: initialisation, dropout; default), "
                        "data.init_args.seed (data: order, hold-out, draws; the model seed stays --model_seed), or both")
    p.add_argument("--model_seed", type=int, default=0, help="seed_everything for every run with --vary data")
    p.add_argument("--test_ckpt", choices=("best", "last", "none"), default="best",
                   help="the checkpoint each run is tested with (default best; last when there is no best); none: "
                        "no fit, test the config's own weights (init_from: a zero-shot prompt, a published model)")
    return p


def main(argv: list[str]) -> None:
    from bigmodel.run import errors

    args, overrides = parser().parse_known_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        raise ValueError(f"--seeds {' '.join(map(str, args.seeds))} repeats a seed; give each seed once")
    for o in overrides:
        if o.split("=", 1)[0] in ("--seed_everything", "--ckpt_path", "--checkpoint.dirpath") or o in ("fit", "test"):
            raise ValueError(f"{o!r}: the sweep sets seeds, checkpoints and subcommands itself; use --seeds")
    errors.check_config_files([a for c in args.config for a in ("-c", c)])
    for config in args.config:
        if not os.path.isfile(config):
            raise FileNotFoundError(f"config {config!r} does not exist")
    gpus = None
    if args.parallel == "gpus":
        gpus = visible_gpus()
        if not gpus:
            raise ValueError("--parallel gpus: no GPU is visible; leave --parallel out to run the seeds one by one")
        parallel = len(gpus)
    elif args.parallel.isdigit() and int(args.parallel) >= 1:
        parallel = int(args.parallel)
    else:
        raise ValueError(f"--parallel {args.parallel!r}: give a number of runs at a time, or 'gpus'")
    out = Path(project_path(args.out or os.path.join("runs", "sweeps", Path(args.config[0]).stem)))
    grid = parse_grid(args.grid)
    runs = plan(out, grid, args.seeds)
    validate = len({r.point for r in runs}) > 1  # a grid: each run validated, and a point chosen on validation
    sweep = Sweep([project_path(c) for c in args.config], overrides, runs, parallel, gpus, args.test_ckpt, validate,
                  args.vary, args.model_seed)
    sweep.execute()
    command = shlex.join(["bigmodel", "sweep", *map(project_path, argv)])
    summary = summarise(runs, command, fitted=args.test_ckpt != "none", select=args.select if validate else None,
                        select_by=args.select_by)
    directories = [out] + ([Path(args.summary_dir)] if args.summary_dir else [])
    write_summary(summary, *directories)
    print(render_markdown(summary))
    print(f"sweep: summary in {', '.join(str(d / 'summary.md') for d in directories)}")
    if sweep.stop_signal is not None:
        sys.exit(128 + sweep.stop_signal)
    failed = sum(r.status == "failed" for r in runs)
    if failed:
        print(f"bigmodel: error: {failed} of {len(runs)} runs failed (listed above; their logs are in {out})",
              file=sys.stderr)
        sys.exit(1)
