"""Which signals stop a run at a saved step, and how a stop names its cause (``stop_cause``): a sweep's runs are
sent SIGTERM whatever stopped the sweep, and name the sweep's signal, which it writes to ``$BIGMODEL_SWEEP_STOP_FILE``
first (``commands/sweep/runner.py``)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

# the signals that stop a fit at a saved step (SIGHUP: where the platform has it)
STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)
# ``timeout -s INT`` sends its signal to its child and then to the child's process group: the same stop arriving
# twice within this many seconds is one Ctrl-C, not the second one that stops at once without saving
SAME_SIGNAL_S = 1.0
# a sweep's runs: the file in which the sweep writes the name of the signal that stopped it, before it sends them
# SIGTERM (commands/sweep/runner.py); empty while the sweep runs on
SWEEP_STOP_FILE = "BIGMODEL_SWEEP_STOP_FILE"


def stop_cause(signum: int, environ: Any = None) -> tuple[int, str]:
    """The signal a stop by ``signum`` reports (its exit status is 128 + it) and how the stop line names it: the
    user's Ctrl-C or hangup, not the SIGTERM that a sweep forwarded to its runs for it."""
    path = (os.environ if environ is None else environ).get(SWEEP_STOP_FILE)
    if signum == signal.SIGTERM and path:
        try:
            name = Path(path).read_text(encoding="utf-8").strip()
        except OSError:  # the sweep is gone (removed its file): the SIGTERM is the run's own
            name = ""
        cause = next((s for s in STOP_SIGNALS if s.name == name), None)
        if cause is not None:
            return cause, f"the sweep on {cause.name}" + (" (Ctrl-C)" if cause == signal.SIGINT else "")
    return signum, signal.Signals(signum).name
