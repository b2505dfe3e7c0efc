"""``bigmodel sweep`` and ``bigmodel results``: seeds run as their own processes, summarised as mean ± sample std,
failures reported, finished seeds never rerun; the README's results table is what the command renders."""

import json
import os
import platform
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bigmodel import UsageError
from bigmodel.commands import results, sweep
from bigmodel.commands.sweep import runner
from bigmodel.commands.sweep.plan import parse_grid, plan
from bigmodel.commands.sweep.runner import Sweep
from bigmodel.commands.sweep.summary import SUMMARY_FILES
from bigmodel.run.stop_signals import SWEEP_STOP_FILE, stop_cause
from bigmodel.utils import formatting
from bigmodel.nn import SmallCNN

ROOT = Path(__file__).resolve().parents[1]
DIGITS_CNN = str(ROOT / "experiments" / "quickstart" / "digits_cnn.yaml")
SHORT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.enable_progress_bar=false",
         "--trainer.enable_model_summary=false"]


def test_a_sweep_summarises_seeds_reports_a_failure_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the runs import tests.helpers
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "sweep"
    failing = ["--trainer.callbacks+=tests.helpers.FailForSeed", "--trainer.callbacks.seed=1"]
    with pytest.raises(SystemExit) as stop:
        sweep.main(["-c", DIGITS_CNN, "--seeds", "0", "1", "--out", str(out), "--parallel", "2", *SHORT, *failing])
    assert stop.value.code == 1
    first = json.loads((out / "summary.json").read_text())
    (point,) = first["points"]
    assert point["metrics"]["test/acc"]["n"] == 1 and point["metrics"]["test/acc"]["std"] is None
    assert list(point["failed"]) == ["1"] and "seed 1 fails on purpose" in point["failed"]["1"]
    assert "- seed 1 failed: fit exit 1" in (out / "summary.md").read_text()
    seed0_log = out / "default" / "seed0" / "fit.log"
    mtime = seed0_log.stat().st_mtime_ns

    monkeypatch.setenv("FAIL_FOR_SEED_RECOVERED", "1")  # the same sweep again, its cause of failure gone
    sweep.main(["-c", DIGITS_CNN, "--seeds", "0", "1", "--out", str(out), "--summary_dir", str(tmp_path / "kept"),
                *SHORT, *failing])
    assert seed0_log.stat().st_mtime_ns == mtime  # seed 0 had its test result: not run again
    summary = json.loads((tmp_path / "kept" / "summary.json").read_text())
    (point,) = summary["points"]
    per_seed = [json.loads((out / "default" / f"seed{s}" / "test" / "test_metrics.json").read_text())["metrics"]
                for s in (0, 1)]
    for metric in ("test/acc", "test/loss"):
        values = [m[metric] for m in per_seed]
        stats = point["metrics"][metric]
        assert stats["n"] == 2 and stats["values"] == {"0": values[0], "1": values[1]}
        assert stats["mean"] == pytest.approx(np.mean(values), abs=1e-12)
        assert stats["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
    assert not point["failed"] and not point["unfinished"]
    run = summary["runs"][1]
    assert run["status"] == "done" and "seed_everything: 1" in run["config"] and run["device"].startswith("1 x CPU")
    assert summary["command"].startswith("bigmodel sweep -c ") and summary["versions"]["torch"]
    cnn = sum(p.numel() for p in SmallCNN(10, in_channels=1, image_size=8, width=32, hidden=128).parameters())
    assert point["parameters"] == {"total": cnn, "trainable": cnn} and point["fitted"]
    assert point["wall_seconds"]["n"] == 2 and point["wall_seconds"]["mean"] > 0
    assert (tmp_path / "kept" / "summary.csv").read_text().splitlines()[0].startswith("point,seed,status,fit_s,test_s")


class FakeRuns:
    """Stands in for the runs' processes (``python -m bigmodel fit|test ...``), in no time: each stage leaves what the
    real one does (checkpoints and the resolved config; the test metrics) and takes ``SECONDS[stage]`` on the sweep's
    clock; a run seeded with one of ``fail`` exits 1 at its fit. ``calls``: each process's arguments."""

    SECONDS = {"fit": 7.0, "test": 6.8}

    def __init__(self, monkeypatch, fail=()):
        self.calls, self.envs, self.clock, self.fail = [], [], 0.0, {str(seed) for seed in fail}
        monkeypatch.setattr(runner, "subprocess", SimpleNamespace(Popen=self.popen, STDOUT=subprocess.STDOUT))
        monkeypatch.setattr(runner, "time", SimpleNamespace(perf_counter=lambda: self.clock, monotonic=time.monotonic))

    def popen(self, command, stdout, stderr, env):
        stage, args = command[3], command[3:]
        self.calls.append(args)
        self.envs.append(env)
        option = dict(a.removeprefix("--").split("=", 1) for a in args if a.startswith("--") and "=" in a)
        run = Path(option["trainer.logger.init_args.save_dir"], option["trainer.logger.init_args.name"])
        self.clock += self.SECONDS[stage]
        if option["seed_everything"] in self.fail:
            stdout.write("RuntimeError: fails on purpose\n")
            return _Child(1)
        if stage == "fit":
            Path(option["checkpoint.dirpath"]).mkdir(parents=True, exist_ok=True)
            for name in ("last.ckpt", "best.ckpt"):
                Path(option["checkpoint.dirpath"], name).write_text("weights")
            (run / "fit").mkdir(parents=True, exist_ok=True)
            (run / "fit" / "config.yaml").write_text(f"seed_everything: {option['seed_everything']}\n")
        else:
            (run / "test").mkdir(parents=True, exist_ok=True)
            (run / "test" / "test_metrics.json").write_text(json.dumps({"metrics": {"test/acc": 0.5}}))
        return _Child(0)


class _Child:
    def __init__(self, code):
        self.code = code

    def wait(self):
        return self.code


class StoppedRuns(FakeRuns):
    """FakeRuns whose first ``hold`` fits run until a signal reaches them (each leaves its ``last.ckpt``); the last of
    them to start gives the sweep a Ctrl-C, or ``signum`` (``group``: the runs get it too, as in a terminal, under
    ``timeout -s INT`` or when the terminal closes), and ``twice`` a second one once the sweep has stopped its runs."""

    def __init__(self, monkeypatch, hold, group, twice=False, signum=signal.SIGINT):
        super().__init__(monkeypatch)
        self.hold, self.group, self.twice, self.signum, self.running = hold, group, twice, signum, []
        self.second_wait = 10.0  # how long a run waits for the sweep's answer to the second Ctrl-C

    def popen(self, command, stdout, stderr, env):
        if command[3] != "fit" or len(self.running) == self.hold:
            return super().popen(command, stdout, stderr, env)
        self.calls.append(command[3:])
        checkpoints = next(a.split("=", 1)[1] for a in command if a.startswith("--checkpoint.dirpath="))
        Path(checkpoints).mkdir(parents=True, exist_ok=True)
        Path(checkpoints, "last.ckpt").write_text("weights at step 3")
        last = Path(checkpoints, "last.ckpt").resolve()  # as a fit names it: Lightning resolves the directory
        self.running.append(_Running(Path(stdout.name), self, last, last=len(self.running) + 1 == self.hold, env=env))
        return self.running[-1]

    def ctrl_c(self):
        if self.group:
            for child in self.running:
                child.signals.append(self.signum)
        signal.pthread_kill(threading.main_thread().ident, self.signum)


class _Running:
    """A fit in progress that ends as ``bigmodel fit`` does: at a saved step after SIGTERM or one SIGINT (exit 128 +
    signal; a SIGTERM from the sweep names the sweep's signal, read as the fit reads it, ``stop_cause``, with the
    environment the sweep gave the process), at once after a second SIGINT in a row (130, nothing saved) or a kill.
    ``signals``: every one it got."""

    def __init__(self, stdout, runs, checkpoint, last, env):
        self.log, self.runs, self.checkpoint, self.last, self.env = stdout, runs, checkpoint, last, env
        self.signals, self.stopped, self.cause = [], threading.Event(), None

    def send_signal(self, signum):
        self.signals.append(signum)
        if signum == signal.SIGTERM and self.cause is None:  # read when the signal arrives, as StopSafely does
            self.cause = stop_cause(signum, self.env)
        self.stopped.set()

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def wait(self):
        if self.last:
            self.runs.ctrl_c()
        if not self.stopped.wait(10):  # no signal from the sweep: the run would train to its end
            return 0
        if self.last and self.runs.twice:
            self.stopped.clear()
            self.runs.ctrl_c()
            self.stopped.wait(self.runs.second_wait)
        if signal.SIGKILL in self.signals:
            return -signal.SIGKILL
        if self.signals[-2:] == [signal.SIGINT, signal.SIGINT]:
            self.write("bigmodel: interrupted by Ctrl-C; nothing was saved by this stop")
            return 130
        signum, name = self.cause or stop_cause(self.signals[-1], {})
        self.write(f"bigmodel: stopped by {name} at step 3; saved {self.checkpoint}")
        return 128 + signum

    def write(self, line):
        with open(self.log, "a") as out:  # its own file descriptor, as a process's output
            out.write(line + "\n")


@pytest.mark.parametrize("group, parallel", [(False, 1), (True, 1), (True, 2)])
def test_one_ctrl_c_stops_the_sweep_and_the_same_command_resumes_it(tmp_path, monkeypatch, capsys, group, parallel):
    """The Ctrl-C reaches the sweep alone (kill -INT <pid>) or its whole process group (a terminal, timeout -s INT):
    either way each running fit is stopped at a saved step (SIGTERM; never a second SIGINT, which would stop it
    without saving) and says it was the sweep's Ctrl-C (exit 130, as the sweep), no further run starts, and the
    summary says which runs stopped and which never started."""
    monkeypatch.chdir(tmp_path)
    fake = StoppedRuns(monkeypatch, hold=parallel, group=group)
    command = ["-c", DIGITS_CNN, "--seeds", "0", "1", "2", "--out", "sw", "--parallel", str(parallel)]
    with pytest.raises(SystemExit) as stop:
        sweep.main(command)
    assert stop.value.code == 130
    assert [args[0] for args in fake.calls] == ["fit"] * parallel  # no later run started
    for child in fake.running:
        assert child.signals == [signal.SIGINT] * group + [signal.SIGTERM]
        assert not Path(child.env[SWEEP_STOP_FILE]).exists()  # the sweep's word to its runs, gone with it
    runs = json.loads(Path("sw/summary.json").read_text())["runs"]
    for run in runs[:parallel]:  # the fit's line names its checkpoint absolute; the summary, as the sweep does
        assert run["status"] == "interrupted"
        assert run["error"] == (f"fit exit 130: bigmodel: stopped by the sweep on SIGINT (Ctrl-C) at step 3; saved "
                                f"sw/default/seed{run['seed']}/checkpoints/last.ckpt")
    assert str(tmp_path) not in Path("sw/summary.json").read_text() + Path("sw/summary.md").read_text()
    assert [(r["status"], r["error"]) for r in runs[parallel:]] == \
        [("pending", "not started (the sweep was stopped)")] * (3 - parallel)
    assert "- seed 2 unfinished: not started (the sweep was stopped)" in Path("sw/summary.md").read_text()
    err = capsys.readouterr().err
    assert err.endswith(f"bigmodel: sweep stopped by SIGINT: {parallel} run{'s' * (parallel > 1)} stopped ({parallel} "
                        f"with a last.ckpt to resume from), {3 - parallel} not started; to resume, run the same "
                        "command again\n")

    sweep.main(command)  # the same command: the stopped fits resume, each appending to its fit.log
    resumed = [args for args in fake.calls[parallel:] if "--ckpt_path=last" in args]
    assert sorted(a for args in resumed for a in args if a.startswith("--seed_everything")) == \
        [f"--seed_everything={seed}" for seed in range(parallel)]
    assert len(fake.calls) == parallel + 2 * 3
    log = Path("sw/default/seed0/fit.log").read_text().splitlines()
    assert log[0] == (f"bigmodel: stopped by the sweep on SIGINT (Ctrl-C) at step 3; saved "
                      f"{tmp_path}/sw/default/seed0/checkpoints/last.ckpt")
    assert log[2].startswith("===== sweep: fit resumed from sw/default/seed0/checkpoints/last.ckpt on 20")
    assert all(r["status"] == "done" for r in json.loads(Path("sw/summary.json").read_text())["runs"])
    capsys.readouterr()
    sweep.main(command)
    assert "sweep: 3 of 3 runs reused from sw (same settings); 0 to run\n" in capsys.readouterr().out


@pytest.mark.parametrize("parallel, user", [(2, None), (4, None), (1, None), (2, "3")])
def test_runs_at_a_time_share_the_cpus_unless_the_threads_are_set(tmp_path, monkeypatch, capsys, parallel, user):
    """Two runs on two cores with a thread per core each ran about 6x slower than with one thread each. The CPUs are
    shared among the runs that run at once: two seeds with --parallel 4 are two runs."""
    monkeypatch.chdir(tmp_path)
    if user is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", user)
    monkeypatch.setattr(runner, "available_cpus", lambda: 5)
    fake = FakeRuns(monkeypatch)
    sweep.main(["-c", DIGITS_CNN, "--seeds", "0", "1", "--out", "sw", "--parallel", str(parallel)])
    threads = {env.get("OMP_NUM_THREADS") for env in fake.envs}
    said = "sweep: 2 runs at a time share 5 CPUs: 2 threads each (OMP_NUM_THREADS; set it to choose another number)"
    if parallel > 1 and user is None:
        assert threads == {"2"} and said in capsys.readouterr().out
        assert runner.threads_per_run(8) == 1  # 5 CPUs for 8 runs at a time: one each, never none
    else:
        assert threads == {user} and "runs at a time share" not in capsys.readouterr().out


def test_a_terminal_that_closes_stops_the_sweep_as_sigterm_does(tmp_path, monkeypatch, capsys):
    """The window closed (or the ssh connection dropped): SIGHUP to the sweep and its runs. Each run stops at a saved
    step (SIGTERM follows the SIGHUP: one stop), no further run starts, the summary says which, and the sweep exits
    129 with the line that says how to resume."""
    monkeypatch.chdir(tmp_path)
    fake = StoppedRuns(monkeypatch, hold=1, group=True, signum=signal.SIGHUP)
    with pytest.raises(SystemExit) as stop:
        sweep.main(["-c", DIGITS_CNN, "--seeds", "0", "1", "--out", "sw"])
    assert stop.value.code == 129 and len(fake.calls) == 1
    assert fake.running[0].signals == [signal.SIGHUP, signal.SIGTERM]
    runs = json.loads(Path("sw/summary.json").read_text())["runs"]
    assert [(r["status"], r["error"]) for r in runs] == [
        ("interrupted", "fit exit 129: bigmodel: stopped by the sweep on SIGHUP at step 3; saved "
                        "sw/default/seed0/checkpoints/last.ckpt"),
        ("pending", "not started (the sweep was stopped)")]
    assert capsys.readouterr().err.endswith("bigmodel: sweep stopped by SIGHUP: 1 run stopped (1 with a last.ckpt to "
                                            "resume from), 1 not started; to resume, run the same command again\n")
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL  # given back


@pytest.mark.parametrize("ignored", ["SIGINT", "SIGHUP"])
def test_a_sweep_whose_signal_is_ignored_leaves_it_ignored(tmp_path, monkeypatch, ignored):
    """A sweep started in the background of a script (SIGINT ignored) is not stopped by the terminal's Ctrl-C, nor
    one started with nohup (SIGHUP ignored) by the terminal closing: it takes over the others, as a fit's StopSafely
    does."""
    monkeypatch.chdir(tmp_path)
    FakeRuns(monkeypatch)
    installed = []
    real = signal.signal
    monkeypatch.setattr(signal, "signal", lambda signum, handler: installed.append(signum) or real(signum, handler))
    signum = getattr(signal, ignored)
    previous = real(signum, signal.SIG_IGN)
    try:
        sweep.main(["-c", DIGITS_CNN, "--seeds", "0", "--out", "sw"])
        assert signal.getsignal(signum) is signal.SIG_IGN and signum not in installed
        assert {signal.SIGINT, signal.SIGTERM, signal.SIGHUP} - {signum} <= set(installed)
    finally:
        real(signum, previous)


@pytest.mark.parametrize("vary, record, says", [
    ("model", {"model": "seed", "data": "unknown"}, "the seed sets the model's initialisation and dropout "
                                                    "(seed_everything)."),
    ("data", {"model": 0, "data": "seed"}, "the seed sets the data order, hold-out and draws (data.init_args.seed); "
                                           "model seed fixed at 0.")])
def test_a_sweep_stopped_before_any_run_finished_says_what_its_seeds_control(tmp_path, monkeypatch, vary, record,
                                                                             says):
    """No run finished to record its resolved config: what the seeds control is the sweep's own arguments, and the
    header names the versions the runs run with rather than an empty field."""
    monkeypatch.chdir(tmp_path)
    StoppedRuns(monkeypatch, hold=1, group=True)
    with pytest.raises(SystemExit):
        sweep.main(["-c", DIGITS_CNN, "--seeds", "0", "1", "--out", "sw", "--vary", vary])
    summary = json.loads(Path("sw/summary.json").read_text())
    assert not any(run["config"] for run in summary["runs"]) and summary["randomness"] == record
    markdown = Path("sw/summary.md").read_text()
    assert f"Seeds: {says}\n" in markdown
    assert "; ;" not in markdown and f"; python {platform.python_version()}, torch " in markdown


def test_a_second_ctrl_c_stops_the_runs_at_once(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("bigmodel.commands.sweep.runner.SAME_SIGNAL_S", 0.0)  # (a person's second press comes later)
    fake = StoppedRuns(monkeypatch, hold=1, group=True, twice=True)
    with pytest.raises(SystemExit) as stop:
        sweep.main(["-c", DIGITS_CNN, "--seeds", "0", "1", "--out", "sw"])
    assert stop.value.code == 130 and len(fake.calls) == 1
    assert fake.running[0].signals == [signal.SIGINT, signal.SIGTERM, signal.SIGINT, signal.SIGKILL]
    runs = json.loads(Path("sw/summary.json").read_text())["runs"]
    assert [(r["status"], r["error"]) for r in runs] == [
        ("interrupted", "fit killed by SIGKILL: nothing saved by this stop"), ("pending", "not started (the sweep was stopped)")]
    assert "(Ctrl-C again stops them at once without saving)" in capsys.readouterr().err


def test_one_ctrl_c_delivered_twice_is_one_stop(tmp_path, monkeypatch, capsys):
    """``timeout -s INT`` signals the sweep, then its whole process group: the sweep gets the same Ctrl-C twice at
    once. That is one stop (the runs save), not the second Ctrl-C that kills them (2 of 5 tries did before)."""
    monkeypatch.chdir(tmp_path)
    fake = StoppedRuns(monkeypatch, hold=1, group=True, twice=True)
    fake.second_wait = 1.0
    with pytest.raises(SystemExit) as stop:
        sweep.main(["-c", DIGITS_CNN, "--seeds", "0", "1", "--out", "sw"])
    assert stop.value.code == 130 and signal.SIGKILL not in fake.running[0].signals
    assert fake.running[0].signals.count(signal.SIGTERM) == 1
    runs = json.loads(Path("sw/summary.json").read_text())["runs"]
    assert runs[0]["status"] == "interrupted" and "last.ckpt" in runs[0]["error"]


def test_a_rerun_reuses_runs_only_when_made_with_the_same_settings(tmp_path, monkeypatch):
    """A changed override or config file stops the sweep before anything runs, naming the directory and the change
    (the old runs' numbers were reported under the new command); the same settings however spelled reuse the runs,
    and an interrupted fit resumes; a seed that failed before leaving nothing to reuse runs again."""
    monkeypatch.chdir(tmp_path)
    Path("short.yaml").write_text("trainer: {max_epochs: 1}\n")
    fake = FakeRuns(monkeypatch)
    command = ["-c", DIGITS_CNN, "-c", "short.yaml", "--seeds", "0"]
    sweep.main(command)
    out = Path("runs/sweeps/digits_cnn+short")  # the default: each combination of files its own directory
    assert [args[0] for args in fake.calls] == ["fit", "test"] and (out / "summary.json").is_file()
    sweep.main(command + ["--model.init_args.lr=3e-3", "--trainer.max_epochs", "1"])  # the same settings, spelled out
    assert len(fake.calls) == 2
    refused = r"runs in runs/sweeps/digits_cnn\+short/default/seed0 were made with other settings \({}\): give " \
              r"another --out, or remove runs/sweeps/digits_cnn\+short/default/seed0 to rerun"
    with pytest.raises(UsageError, match=refused.format("model.init_args.lr 0.003 -> 0.5")):
        sweep.main(command + ["--model.init_args.lr", "0.5"])
    Path("short.yaml").write_text("trainer: {max_epochs: 2}  # edited\n")
    with pytest.raises(UsageError, match=refused.format("trainer.max_epochs 1 -> 2")):
        sweep.main(command)
    for name in ("test/test_metrics.json", ".fit_done"):  # a fit interrupted: last.ckpt only
        (out / "default" / "seed0" / name).unlink()
    with pytest.raises(UsageError, match=refused.format("trainer.max_epochs 1 -> 2")):
        sweep.main(command)
    assert len(fake.calls) == 2  # nothing ran
    Path("short.yaml").write_text("trainer: {max_epochs: 1}\n")
    log = out / "default" / "seed0" / "fit.log"
    log.write_text("the interrupted fit's output\n")
    sweep.main(command)
    assert fake.calls[2][0] == "fit" and "--ckpt_path=last" in fake.calls[2]
    first, blank, separator = log.read_text().splitlines()  # the resume appended to the log, below a separator
    assert first == "the interrupted fit's output" and separator.startswith(
        f"===== sweep: fit resumed from {out}/default/seed0/checkpoints/last.ckpt on 20")

    fake.fail = {"0"}
    with pytest.raises(SystemExit):
        sweep.main(command + ["--out", "typo", "--model.init_args.lrr", "0.1"])
    fake.fail = set()
    sweep.main(command + ["--out", "typo"])  # only logs were left: nothing to reuse, nothing refused
    assert json.loads(Path("typo/summary.json").read_text())["runs"][0]["status"] == "done"


def test_a_failed_rerun_keeps_the_summary_with_more_finished_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    kept = tmp_path / "kept"
    shutil.copytree(ROOT / "experiments" / "results" / "digits_cnn", kept)  # 3 finished runs
    committed = {name: (kept / name).read_text() for name in SUMMARY_FILES}
    fake = FakeRuns(monkeypatch, fail=[0, 1])
    with pytest.raises(SystemExit) as stop:
        sweep.main(["-c", DIGITS_CNN, "--seeds", "0", "--out", "sw", "--summary_dir", str(kept)])
    assert stop.value.code == 1
    assert {name: (kept / name).read_text() for name in SUMMARY_FILES} == committed
    assert f"sweep: no run finished: kept the summary in {kept} (3 finished runs)\n" in capsys.readouterr().out
    assert "- seed 0 failed: fit exit 1" in Path("sw/summary.md").read_text()  # the sweep's own record of it
    with pytest.raises(SystemExit):
        sweep.main(["-c", DIGITS_CNN, "--seeds", "0", "--out", "sw", "--summary_dir", "empty"])
    assert not Path("empty").exists() and "wrote nothing to empty" in capsys.readouterr().out

    fake.fail = {"1"}
    with pytest.raises(SystemExit):
        sweep.main(["-c", DIGITS_CNN, "--seeds", "0", "1", "--out", "sw", "--summary_dir", str(kept)])
    assert {name: (kept / name).read_text() for name in SUMMARY_FILES} == committed
    assert "(3 finished runs; this sweep finished 1 of 2)" in capsys.readouterr().out
    sweep.main(["-c", DIGITS_CNN, "--seeds", "0", "--out", "sw", "--summary_dir", str(kept)])  # complete: as asked
    assert [r["seed"] for r in json.loads((kept / "summary.json").read_text())["runs"]] == [0]


def test_a_reused_run_reports_the_wall_time_it_took(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    fake = FakeRuns(monkeypatch)
    sweep.main(["-c", DIGITS_CNN, "--seeds", "0", "--out", "sw"])
    assert "reused" not in capsys.readouterr().out
    sweep.main(["-c", DIGITS_CNN, "--seeds", "0", "1", "--out", "sw"])  # one seed more
    assert "sweep: 1 of 2 runs reused from sw (same settings: seed 0); 1 to run\n" in capsys.readouterr().out
    for _ in range(2):
        sweep.main(["-c", DIGITS_CNN, "--seeds", "0", "--out", "sw"])
        summary = json.loads(Path("sw/summary.json").read_text())
        assert summary["runs"][0]["seconds"] == {"fit": 7.0, "test": 6.8}
        assert summary["points"][0]["wall_seconds"]["mean"] == pytest.approx(13.8)
    assert len(fake.calls) == 4  # the later sweeps reused the run
    assert "sweep: 1 of 1 runs reused from sw (same settings); 0 to run\n" in capsys.readouterr().out


class TimedStoppedRuns(StoppedRuns):
    """StoppedRuns whose stopped fits had trained ``STOPPED_AFTER`` seconds on the sweep's clock."""

    STOPPED_AFTER = 30.0

    def popen(self, command, stdout, stderr, env):
        held = command[3] == "fit" and len(self.running) < self.hold
        child = super().popen(command, stdout, stderr, env)
        self.clock += self.STOPPED_AFTER if held else 0.0
        return child


def test_a_resumed_fit_reports_the_time_before_its_stop_too(tmp_path, monkeypatch):
    """A fit stopped after 30 s and resumed for 7 s took 37 s: the resumed sweep's wall time counts both parts."""
    monkeypatch.chdir(tmp_path)
    fake = TimedStoppedRuns(monkeypatch, hold=1, group=False)
    command = ["-c", DIGITS_CNN, "--seeds", "0", "--out", "sw"]
    with pytest.raises(SystemExit):
        sweep.main(command)
    assert json.loads(Path("sw/summary.json").read_text())["runs"][0]["seconds"] == {"fit": 30.0}
    sweep.main(command)
    assert "--ckpt_path=last" in fake.calls[1]
    summary = json.loads(Path("sw/summary.json").read_text())
    assert summary["runs"][0]["seconds"] == {"fit": 37.0, "test": 6.8}
    assert summary["points"][0]["wall_seconds"]["mean"] == pytest.approx(43.8)
    sweep.main(command)  # reused: the same time
    assert json.loads(Path("sw/summary.json").read_text())["runs"][0]["seconds"] == {"fit": 37.0, "test": 6.8}


def test_test_ckpt_none_tests_the_configs_own_weights_and_a_grid_selects_on_validation(tmp_path, monkeypatch):
    """What a zero-shot prompt (or a published model as it is) needs: one test per seed, no fit, no checkpoint. With a
    grid, each run is also validated, and the point chosen on the validation metric is recorded (never on test)."""
    monkeypatch.chdir(tmp_path)
    sweep.main(["-c", DIGITS_CNN, "--seeds", "3", "--out", str(tmp_path / "zero"), "--test_ckpt", "none",
                "--grid", "model.init_args.backbone.init_args.width=16,32", "--select", "val/loss", "--parallel", "2",
                *SHORT])
    points = ("width=16", "width=32")
    run_dir = tmp_path / "zero" / points[0] / "seed3"
    assert not (run_dir / "fit.log").exists() and not list(run_dir.rglob("*.ckpt"))
    summary = json.loads((tmp_path / "zero" / "summary.json").read_text())
    run = summary["runs"][0]
    assert run["status"] == "done" and run["ckpt_path"] is None and "seed_everything: 3" in run["config"]
    threads = os.environ.get("OMP_NUM_THREADS") or max(1, runner.available_cpus() // 2)  # two runs at a time
    assert run["device"].endswith(f", {threads} threads)"), run["device"]
    assert 0 <= run["metrics"]["test/acc"] < 0.3  # an untrained CNN: about chance
    point = summary["points"][0]
    assert not point["fitted"] and formatting.trained_parameters(point).startswith("0 / ")
    assert formatting.duration(71.4) == "71 s" and formatting.duration(912) == "15.2 min" and formatting.count(130_210) == "130.2k"
    losses = [json.loads((tmp_path / "zero" / p / "seed3" / "validate" / "validate_metrics.json").read_text())
              ["metrics"]["val/loss"] for p in points]
    assert [p["validation"]["val/loss"]["values"]["3"] for p in summary["points"]] == losses
    assert abs(losses[0] - losses[1]) > 1e-4  # two networks: the choice between them is a real one
    assert summary["selected"]["selected"] == {"metric": "val/loss", "goal": "min", "by": "mean",
                                               "point": points[losses.index(min(losses))],
                                               "n": {points[0]: 1, points[1]: 1}}
    assert " --out zero " in summary["command"] and run["directory"] == f"zero/{points[0]}/seed3"  # project-relative
    assert summary["randomness"] == {"model": "seed", "data": 42}


def test_grid_points_and_their_errors(tmp_path):
    grid = parse_grid(["model.init_args.lr=1e-4,3e-4", "--trainer.max_epochs=2"])
    runs = plan(tmp_path, grid, [0, 1])
    assert [(r.point, r.seed) for r in runs] == [
        ("lr=1e-4_max_epochs=2", 0), ("lr=1e-4_max_epochs=2", 1), ("lr=3e-4_max_epochs=2", 0),
        ("lr=3e-4_max_epochs=2", 1)]
    assert runs[2].grid == {"model.init_args.lr": "3e-4", "trainer.max_epochs": "2"}
    args = Sweep(["a.yaml"], ["--data.init_args.seed={seed}"], runs).arguments(runs[1], "fit")
    assert args[:4] == ["fit", "-c", "a.yaml", "--data.init_args.seed=1"]  # {seed}: the run's seed
    with pytest.raises(ValueError, match="write KEY=VALUE1,VALUE2"):
        parse_grid(["model.init_args.lr"])
    with pytest.raises(ValueError, match="given twice"):
        parse_grid(["a.lr=1", "a.lr=2"])
    with pytest.raises(ValueError, match="repeats a seed"):
        sweep.main(["-c", DIGITS_CNN, "--seeds", "0", "0"])
    with pytest.raises(ValueError, match="sets seeds, checkpoints"):
        sweep.main(["-c", DIGITS_CNN, "--seed_everything=3"])


def test_mean_std_formats_both_numbers_to_the_same_place():
    assert formatting.mean_std({"n": 3, "mean": 0.91234, "std": 0.00812}) == "0.9123 ± 0.0081 (n=3)"
    assert formatting.mean_std({"n": 3, "mean": 0.91234, "std": 0.00812}, 100, 1) == "91.2 ± 0.8 (n=3)"
    assert formatting.mean_std({"n": 2, "mean": 26.2, "std": 4.1012}) == "26.20 ± 4.10 (n=2)"
    assert formatting.mean_std({"n": 1, "mean": 0.5, "std": None}) == "0.5000 ± – (n=1)"


def _fixture_summary(path: Path) -> str:
    summary = {
        "command": "bigmodel sweep -c x.yaml --seeds 0 1 2", "date": "2026-11-23", "code": "abc", "devices": ["1 x CPU"],
        "versions": {}, "runs": [],
        "points": [{"point": "default", "grid": {}, "seeds": [0, 1, 2], "failed": {"2": "fit exit 2: bad"},
                    "unfinished": {}, "wall_seconds": {"n": 2, "mean": 912.0, "std": 30.0},
                    "parameters": {"total": 5_450_000, "trainable": 1_034_498}, "fitted": True,
                    "metrics": {"test/acc": {"n": 2, "mean": 0.9, "std": 0.01414, "values": {"0": 0.89, "1": 0.91}}}}],
    }
    path.mkdir(parents=True)
    (path / "summary.json").write_text(json.dumps(summary))
    return str(path / "summary.json")


def test_results_renders_rows_from_summaries(tmp_path, monkeypatch, capsys):
    spec = tmp_path / "results.yaml"
    summary = _fixture_summary(tmp_path / "r")
    spec.write_text(f"""rows:
  - {{result: Digits, summary: {summary}, metric: test/acc, percent: true, data: digits}}
  - {{result: SST-2 GPU, metric: test/acc, data: SST-2, not_measured: no GPU yet, command: bigmodel sweep -c y.yaml}}
""")
    assert results.render(spec).splitlines() == [
        "| Result | Data | Metric | Mean ± std (n) | Per seed | Δ vs reference [95 % CI] | Parameters trained / total "
        "| Time per run | Device | Date | Command |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        "| Digits | digits | test/acc (%) | 90.0 ± 1.4 (n=2), 1 of 3 seeds failed or unfinished | 89.0, 91.0 "
        "|  | 1.03M / 5.45M (19 %) | 15.2 min | 1 x CPU | 2026-11-23 | `bigmodel sweep -c x.yaml --seeds 0 1 2` |",
        "| SST-2 GPU | SST-2 | test/acc | not measured: no GPU yet |  |  |  |  |  |  | `bigmodel sweep -c y.yaml` |",
    ]
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{results.BEGIN}\nold\n{results.END}\nafter\n")
    with pytest.raises(SystemExit):
        results.main([str(spec), "--check", str(readme)])
    results.main([str(spec), "--write", str(readme)])  # a copy of the README's markers: its marker names this command
    capsys.readouterr()
    results.main([str(spec), "--check", str(readme)])
    assert capsys.readouterr().out == f"the results table in {readme} is up to date\n"  # (it said nothing)
    written = readme.read_text()
    assert written.startswith(f"intro\n<!-- results table: generated by `bigmodel results {spec} --write {readme}`; "
                              "do not edit -->\n| Result |") and written.endswith(f"\n{results.END}\nafter\n")
    monkeypatch.chdir(tmp_path)  # the check compares the table, whatever spelling of the paths the marker has
    results.main(["results.yaml", "--check", "README.md"])
    assert readme.read_text() == written
    other = tmp_path / "R.md"
    other.write_text("no markers\n")
    begin = f"<!-- results table: generated by `bigmodel results {spec} --write {other}`; do not edit -->"
    with pytest.raises(ValueError) as missing:  # the markers to add name this file and this command
        results.main([str(spec), "--write", str(other)])
    assert str(missing.value) == (f"{other} has no results markers; put these two lines where the table goes:\n"
                                  f"{begin}\n{results.END}")
    other.write_text(f"{begin}\n{results.END}\n")
    results.main([str(spec), "--write", str(other)])
    results.main([str(spec), "--check", str(other)])
    assert other.read_text().startswith(f"{begin}\n| Result |")
    spec.write_text(f"rows:\n  - {{result: X, summary: {summary}, metric: test/f1}}\n")
    with pytest.raises(ValueError, match="has no 'test/f1'; it has test/acc"):
        results.render(spec)


def test_a_row_names_a_sweep_directory_or_says_where_its_path_was_looked_for(tmp_path, monkeypatch):
    """``summary: runs/sweeps/x`` (the sweep's directory, as compare takes it) was 'does not exist'."""
    _fixture_summary(tmp_path / "runs" / "sweeps" / "x")
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "results.yaml"
    spec.write_text("rows:\n  - {result: X, summary: runs/sweeps/x, metric: test/acc}\n")
    assert "| X |  | test/acc | 0.9000 ± 0.0141 (n=2), 1 of 3 seeds failed" in results.render(spec)
    spec.write_text("rows:\n  - {result: X, summary: runs/sweeps/y, metric: test/acc}\n")
    with pytest.raises(FileNotFoundError) as missing:
        results.render(spec)
    assert str(missing.value) == (
        f"{spec}: row 'X': no runs/sweeps/y (summary: paths are read from the working directory {tmp_path}, else from "
        "the spec's folder or one above it); give a sweep's directory or its summary.json, or write one with "
        "`bigmodel sweep ... --summary_dir runs/sweeps/y`")


def test_a_summary_read_back_from_json_shows_its_per_seed_values(tmp_path):
    """summary.json keys the per-seed values by the seed as text; summary.md looked them up by the int seed."""
    summary = json.loads(Path(_fixture_summary(tmp_path / "r")).read_text())
    summary["points"][0]["wall_seconds"] = None
    lines = results.summary_markdown(summary).splitlines()
    assert "| test/acc | 0.9000 ± 0.0141 (n=2) | 0.8900 | 0.9100 | – |" in lines
    assert "- seed 2 failed: fit exit 2: bad" in lines


def test_a_seed_is_found_keyed_by_int_or_by_text():
    """A summary made in this process keys its per-seed records by the int seed, one read back from JSON by text."""
    assert results.seed_value({0: 0.5, 1: 0.7}, "1") == results.seed_value({"0": 0.5, "1": 0.7}, 1) == 0.7
    assert results.seed_value({"0": "fit exit 1"}, 2) is None and results.seed_value({}, "0") is None
    assert results.seed_key(3) == results.seed_key("3") == "3"


def test_a_row_chosen_per_seed_says_when_a_seed_chose_among_fewer_points(tmp_path):
    summary = json.loads(Path(_fixture_summary(tmp_path / "r")).read_text())
    point = summary["points"][0]
    summary["selected"] = dict(point, point="selected", failed={}, selected={
        "metric": "val/loss", "goal": "min", "by": "seed", "points": {"0": "default", "1": "default"},
        "incomplete": {"1": "chose among 1 of 2 points; lr=1e-2: failed (boom)"}})
    path = tmp_path / "r" / "summary.json"
    path.write_text(json.dumps(summary))
    spec = tmp_path / "results.yaml"
    spec.write_text(f"rows:\n  - {{result: X, summary: {path}, metric: test/acc}}\n")
    assert "0.9000 ± 0.0141 (n=2), 1 of 3 seeds chose among fewer grid points (see summary.md) |" in results.render(spec)


def test_the_readme_results_table_is_the_rendered_one(monkeypatch):
    monkeypatch.chdir(ROOT)
    text = (ROOT / "experiments" / "README.md").read_text(encoding="utf-8")
    assert results.update(text, results.render("experiments/results.yaml")) == text, \
        "run `bigmodel results experiments/results.yaml --write experiments/README.md`"


def test_the_readme_delta_column_is_what_bigmodel_compare_renders_from_the_committed_summaries(monkeypatch, capsys):
    import yaml

    from bigmodel.commands import compare

    monkeypatch.chdir(ROOT)
    rows = [r for r in yaml.safe_load((ROOT / "experiments" / "results.yaml").read_text())["rows"] if "compare_to" in r]
    table = {line.split(" | ")[0].removeprefix("| "): line.split(" | ") for line in
             (ROOT / "experiments" / "README.md").read_text(encoding="utf-8").splitlines() if line.startswith("| ")}
    column = table["Result"].index("Δ vs reference [95 % CI]")
    assert len(rows) >= 8  # every fine-tuning method against full, pretrained against scratch, ...
    for row in rows:
        compare.main([row["compare_to"]["summary"], row["summary"], "--metric", row["metric"], "--percent"])
        out = capsys.readouterr().out.splitlines()
        line = next(line for line in out if line.startswith("| summary.json") or " − " in line and line.startswith("| "))
        note = "".join(f"; {n.split('): ', 1)[1]}" for n in out if n.startswith("note ("))  # settings that differ
        cells = line.strip("| ").split(" | ")
        other, reference = cells[0].split(" − ")
        verdict = cells[6].replace(f"{other} better", "this row better").replace(
            f"{reference} better", f"{row['compare_to']['label']} better")
        assert table[row["result"]][column] == (f"{cells[2]} vs {row['compare_to']['label']} (paired, n={cells[4]}): "
                                                f"{verdict}{note}"), row["result"]
