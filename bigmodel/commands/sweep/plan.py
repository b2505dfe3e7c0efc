"""A sweep's plan: one ``Run`` per grid point and seed, each in a directory of its own
(``<out>/<point>/seed<k>/``)."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

from bigmodel.run.directory import METRICS_FILE


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
