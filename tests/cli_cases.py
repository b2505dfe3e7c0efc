"""Runs many ``bigmodel`` command lines in one process (the CLI's entry point, ``bigmodel.commands.cli.main``), so a test
can check every bad input through the real CLI in a subprocess while paying Lightning's ~8 s import once.

    python -m tests.cli_cases cases.json results.json

cases.json: ``[{"name": ..., "args": [...], "env": {...}, "no_bf16_gpu": false}, ...]``;
results.json: ``{name: {"code": exit code, "last_line": last stderr line, "lines": number of stderr lines}}``.
"""

import contextlib
import io
import json
import os
import sys
from unittest import mock

import torch

from bigmodel.commands.cli import main
from bigmodel.utils import hub


def run_case(case: dict) -> dict:
    stderr = io.StringIO()
    patches = contextlib.ExitStack()
    patches.enter_context(mock.patch.dict(os.environ, case.get("env", {})))
    if case.get("no_bf16_gpu"):  # a GPU without bfloat16 (e.g. a V100), faked
        patches.enter_context(mock.patch.object(torch.cuda, "is_available", lambda: True))
        patches.enter_context(mock.patch.object(torch.cuda, "is_bf16_supported", lambda *a, **k: False))
    hub.hub_reachable.cache_clear()
    code = 0
    with patches, contextlib.redirect_stderr(stderr):
        try:
            main(case["args"])
        except SystemExit as exit:
            code = exit.code
        except Exception as err:  # noqa: BLE001 - a traceback is exactly what the tests look for
            code, stderr = "traceback", io.StringIO(f"{type(err).__name__}: {err}")
    hub.hub_reachable.cache_clear()
    lines = [line for line in stderr.getvalue().splitlines() if line.strip()]
    ours = [line for line in lines if line.startswith("bigmodel: error:")]
    return {"code": code, "last_line": (ours or lines or [""])[-1], "lines": len(ours),
            "traceback": "Traceback" in stderr.getvalue()}


if __name__ == "__main__":
    cases = json.loads(open(sys.argv[1]).read())
    results = {case["name"]: run_case(case) for case in cases}
    with open(sys.argv[2], "w") as f:
        json.dump(results, f, indent=1)
