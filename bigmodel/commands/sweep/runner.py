"""Running a sweep's plan: each run's stages (fit, validate on a grid, test) as processes of their own, a few at a
time, each pinned to one GPU when asked; seeds whose test result exists are skipped, a killed fit resumes from its
``last.ckpt``, and SIGTERM or Ctrl-C stops every run where it is (each saves ``last.ckpt``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bigmodel.commands.sweep.plan import Run

_INTERRUPTED = (130, 143)  # a run stopped by Ctrl-C / SIGTERM: its last.ckpt is kept and the next sweep resumes it


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


def _last_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    return lines[-1][:500] if lines else "no output"


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
