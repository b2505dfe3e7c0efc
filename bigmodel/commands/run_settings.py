"""A run's settings as dotted keys (``{"trainer.max_steps": 250, ...}``): what a sweep records of each run and
compares before it reuses one (``sweep/reuse.py``), and what ``compare`` holds two sweeps' runs against
(``held_settings.py``). Plain data only: ``results`` and ``compare`` import it without Lightning."""

from __future__ import annotations

import json
import re
from typing import Any

NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")  # a number YAML 1.1 reads as a string (1e-3)
# where a run writes, not what it computes: the same settings rerun elsewhere (or resumed) differ only in these
OUTPUT_KEYS = ("trainer.logger.init_args.save_dir", "trainer.logger.init_args.name",
               "trainer.logger.init_args.version", "checkpoint.dirpath", "ckpt_path")


def flatten(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved config (a run's ``config.yaml`` as Lightning wrote it) flat as ``settings`` records settings
    (``{"trainer.max_steps": 250, ...}``), output paths left out: what ``compare`` holds two sweeps' runs against."""
    flat: dict[str, Any] = {}
    merge(flat, "", config or {})
    for key in OUTPUT_KEYS:
        flat.pop(key, None)
    return json.loads(json.dumps(flat, default=str))


def merge(flat: dict[str, Any], key: str, value: Any) -> None:
    """Sets ``key`` (dotted) to ``value`` in ``flat`` (a mapping flattened to its leaves), replacing what was below."""
    if isinstance(value, dict) and value:
        for name, inner in value.items():
            merge(flat, f"{key}.{name}" if key else str(name), inner)
        return
    for old in [k for k in flat if k.startswith(key + ".")]:
        del flat[old]
    flat[key] = float(value) if isinstance(value, str) and NUMBER.fullmatch(value) else value  # 5e-1 as 0.5
