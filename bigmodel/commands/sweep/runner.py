"""Running a sweep's plan: each run's stages (fit, validate on a grid, test) as processes of their own, a few at a
time, each pinned to one GPU when asked; seeds whose test result exists are skipped, a killed fit resumes from its
``last.ckpt``, and SIGTERM, Ctrl-C or SIGHUP (the terminal closed) stops the sweep: each running run at a saved step
(``last.ckpt``), and no further run starts (a second Ctrl-C stops the running ones at once, without saving). What
it reuses of earlier runs, and when it refuses to, is ``reuse``'s."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import datetime
from pathlib import Path
from typing import Any

from bigmodel.commands.sweep import reuse
from bigmodel.commands.sweep.plan import Run
from bigmodel.run.hangup import leave_hung_up_terminal
from bigmodel.run.stop_signals import SAME_SIGNAL_S, STOP_SIGNALS, SWEEP_STOP_FILE

_INTERRUPTED = tuple(128 + s for s in STOP_SIGNALS)  # a run stopped by a signal at a saved step: the next sweep resumes it
# each stage's wall time, a stopped fit's too: a reused run reports the time it took, a resumed fit adds the earlier part
SECONDS_FILE = "seconds.json"


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
        self._lock = threading.RLock()  # RLock: a second signal may arrive while the first is handled
        self._children: set[subprocess.Popen] = set()
        self.stop_signal: int | None = None
        self._stopped_at = -SAME_SIGNAL_S  # (time.monotonic() of the first stop signal)
        self._stop_file: str | None = None  # where the runs read the signal that stopped the sweep (SWEEP_STOP_FILE)
        self.threads: int | None = None  # CPU threads per run (``threads_per_run``), set when the sweep starts

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

    def settings(self, run: Run) -> dict[str, Any]:
        """What ``run`` is configured with (``reuse.settings`` of its fit's arguments), and the checkpoint it is tested
        with."""
        return reuse.settings(self.arguments(run, "fit")[1:], self.test_ckpt)

    def execute(self) -> None:
        reuse.check(self.runs, self.settings)
        reuse.report(self.runs, self.finished)
        at_once = min(self.parallel, sum(not self.finished(r) for r in self.runs))  # runs that will share the CPUs
        self.threads = threads_per_run(at_once)
        if self.threads is not None:
            print(f"sweep: {at_once} runs at a time share {available_cpus()} CPUs: {self.threads} thread"
                  f"{'s' * (self.threads > 1)} each (OMP_NUM_THREADS; set it to choose another number)", flush=True)
        # a signal set to be ignored (SIGINT of a job started with & from a script, SIGHUP under nohup) stays ignored,
        # as in StopSafely
        handled = [s for s in STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN] \
            if _main_thread() else []
        descriptor, self._stop_file = tempfile.mkstemp(prefix="bigmodel-sweep-", suffix=".stop")
        os.close(descriptor)
        previous = {signum: signal.signal(signum, self._on_signal) for signum in handled}
        try:
            with ThreadPoolExecutor(self.parallel) as pool:
                futures = [pool.submit(self._run, run) for run in self.runs]
                while wait(futures, timeout=1.0).not_done:  # a signal that comes while another is being handled
                    pass  # runs its handler only when Python code runs again (CPython): here, within a second
                for future in futures:
                    future.result()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            Path(self._stop_file).unlink(missing_ok=True)
            self._stop_file = None

    def finished(self, run: Run) -> bool:
        """Whether ``run`` has its results (a test result and, in a grid, its validation): it is reused, not run."""
        return run.metrics_file.is_file() and (not self.validate or run.validation_file.is_file())

    def _run(self, run: Run) -> None:
        stages = ("validate",) * self.validate + ("test",)
        stages = stages if self.test_ckpt == "none" else ("fit", *stages)
        if self.finished(run):
            self._collect(run)
            run.status = "done"
            return
        with self._lock:
            slot = self._free.pop()
        try:
            for stage in stages:
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
        if self.threads is not None:
            env["OMP_NUM_THREADS"] = str(self.threads)
        if self._stop_file is not None:
            env[SWEEP_STOP_FILE] = self._stop_file
        Path(run.directory).mkdir(parents=True, exist_ok=True)
        log = Path(run.directory, f"{stage}.log")
        resumed = "--ckpt_path=last" in args
        with self._lock:  # a stop handled from here on finds the child, or this run finds the stop
            if self.stop_signal is not None:
                self._not_started(run, stage)
                return False
            print(f"sweep: {run.point} seed {run.seed}: {stage}" + (f" on GPU {slot}" if slot else "")
                  + (" (resumed from its last.ckpt)" if resumed else ""), flush=True)
            start = time.perf_counter()
            with open(log, "a" if resumed else "w", encoding="utf-8") as out:
                if resumed:  # the earlier part of the log is kept: the resumed fit's output follows this line
                    out.write(f"\n===== sweep: fit resumed from {run.checkpoints / 'last.ckpt'} on "
                              f"{datetime.now():%Y-%m-%d %H:%M:%S} =====\n")
                    out.flush()
                child = subprocess.Popen([sys.executable, "-m", "bigmodel", *args], stdout=out,
                                         stderr=subprocess.STDOUT, env=env)
            self._children.add(child)
        code = child.wait()
        with self._lock:
            self._children.discard(child)
        earlier = _recorded_seconds(run).get(stage, 0.0) if resumed else 0.0  # the fit's part before its stop
        run.seconds[stage] = round(earlier + time.perf_counter() - start, 1)
        Path(run.directory, SECONDS_FILE).write_text(json.dumps(run.seconds), encoding="utf-8")
        if code == 0:
            if stage == "fit":
                Path(run.directory, ".fit_done").write_text(json.dumps(run.seconds), encoding="utf-8")
            return True
        stopped = code in _INTERRUPTED or self.stop_signal is not None  # a run the stop ended, however it exited
        run.status = "interrupted" if stopped else "failed"
        ended = (f"killed by {_signal_name(-code)}: nothing saved by this stop" if code < 0  # e.g. while starting
                 else f"exit {code}: {_as_named(_last_line(log), run)}")
        run.error = f"{stage} {ended}"
        print(f"sweep: {run.point} seed {run.seed}: {run.error} (log: {log})", flush=True)
        return False

    def _not_started(self, run: Run, stage: str) -> None:
        """The sweep was stopped before ``run``'s ``stage``: not started at all (pending), or part-way (interrupted)."""
        begun = bool(run.seconds) or reuse.reusable(run)
        run.status = "interrupted" if begun else "pending"
        run.error = f"{stage} not started (the sweep was stopped)" if begun else "not started (the sweep was stopped)"

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
        run.seconds = _recorded_seconds(run) | run.seconds  # a reused run: the times it took
        config = Path(run.directory, "fit" if self.test_ckpt != "none" else "test", "config.yaml")
        run.config = config.read_text(encoding="utf-8") if config.is_file() else None

    def _on_signal(self, signum: int, frame: Any) -> None:
        """The first SIGINT, SIGTERM or SIGHUP stops the sweep: no further run starts, and each running one is sent
        SIGTERM (it saves last.ckpt at its step). SIGTERM, not the SIGINT: after a Ctrl-C in a terminal (or
        ``timeout -s INT``) the runs, in the sweep's process group, got that SIGINT themselves, and a second one would
        stop them without saving; SIGTERM after SIGINT (or a hangup's SIGHUP) is one stop at the same step. The
        signal's name is written to the runs' ``SWEEP_STOP_FILE`` first: each run names it (``stopped by the sweep on
        SIGINT (Ctrl-C)``) and exits with its status (130 / 143 / 129), as the sweep does. A
        later Ctrl-C stops them at once (killed, nothing saved by this stop), as a second Ctrl-C stops a fit; the same
        Ctrl-C arriving twice within ``SAME_SIGNAL_S`` (``timeout -s INT`` signals the sweep, then its process group)
        is one. After a hangup the sweep's own output leaves the dead terminal, so that it still writes its summary."""
        leave_hung_up_terminal()
        with self._lock:
            again = self.stop_signal is not None
            if again and signum == signal.SIGINT and time.monotonic() - self._stopped_at < SAME_SIGNAL_S:
                return  # one Ctrl-C delivered twice: the runs were sent SIGTERM already
            if not again:
                self.stop_signal, self._stopped_at = signum, time.monotonic()
                self._tell_runs(signum)
                print(f"sweep: {_signal_name(signum)} received: stopping the running runs at a saved step; no "
                      "further run starts" + (" (Ctrl-C again stops them at once without saving)" if signum == signal.SIGINT else ""),
                      file=sys.stderr, flush=True)
            for child in self._children:
                if again and signum == signal.SIGINT:
                    child.kill()  # a second Ctrl-C: stop now
                else:
                    child.send_signal(signal.SIGTERM)

    def _tell_runs(self, signum: int) -> None:
        """The signal that stopped the sweep, for its runs to name (``run.stopping.stop_cause``): written before the
        SIGTERM that makes them read it (one file for all the sweep's runs, removed when it ends)."""
        if self._stop_file is None:
            return
        try:
            Path(self._stop_file).write_text(signal.Signals(signum).name, encoding="utf-8")
        except OSError:  # (a full /tmp) the runs say SIGTERM, as they did before: the stop and its saving go on
            pass


def _recorded_seconds(run: Run) -> dict[str, float]:
    """The stage times recorded in ``run``'s directory by earlier sweeps (an earlier bigmodel saved only the fit's,
    in .fit_done)."""
    saved: dict[str, float] = {}
    for name in (".fit_done", SECONDS_FILE):
        if Path(run.directory, name).is_file():
            saved.update(json.loads(Path(run.directory, name).read_text(encoding="utf-8")))
    return saved


def _last_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    return lines[-1][:500] if lines else "no output"


def _as_named(text: str, run: Run) -> str:
    """``text`` with the run's directory as the sweep names it (relative to where it started, as in the summary's
    ``directory``) where the run's process wrote it absolute (Lightning resolves the checkpoint directory, so a
    stopped fit's line names ``/home/.../last.ckpt``): summaries are committed, never with a machine's paths."""
    for absolute in dict.fromkeys((os.path.realpath(run.directory), os.path.abspath(run.directory))):
        text = text.replace(absolute + os.sep, run.directory + os.sep)
    return text


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity, as a batch scheduler sets it), else all of them."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_per_run(parallel: int) -> int | None:
    """CPU threads for each of ``parallel`` runs at a time: the available CPUs shared out, at least one each. Torch
    otherwise starts a thread per CPU in every run, and runs contending for the same cores that way were measured
    about 6x slower than one thread each (two runs on two cores). None (the runs inherit the environment) for one run
    at a time, or where the user set ``OMP_NUM_THREADS``."""
    if parallel <= 1 or "OMP_NUM_THREADS" in os.environ:
        return None
    return max(1, available_cpus() // parallel)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
