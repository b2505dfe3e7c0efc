"""Nothing a user trained is lost: stops by signal or max_steps keep the step reached, a failed fresh fit keeps the
earlier run's checkpoints, one fit per run name, and bad checkpoints / disks / configs are one line, not a trace."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest
import torch

from bigmodel.run import directory as runs
from bigmodel.run.hangup import leave_hung_up_terminal
from bigmodel.commands.cli import BigModelCLI, main
from tests.test_cli import finetune_config, mlm_config, write_yaml
from tests.test_monitoring import events

ROOT = Path(__file__).resolve().parents[1]


def run_main(args: list[str], capsys) -> tuple[int, str]:
    """``bigmodel <args>`` in this process: (exit code, last stderr line)."""
    capsys.readouterr()
    try:
        main(args)
        code = 0
    except SystemExit as exit:
        code = exit.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("bigmodel:")]
    return code, (lines or [""])[-1]


def step_of(path: Path) -> int:
    return torch.load(path, weights_only=True)["global_step"]


@pytest.fixture(scope="module")
def small_text(tmp_path_factory, pydoc_text) -> Path:
    path = tmp_path_factory.mktemp("text") / "small.txt"
    path.write_text("\n".join(pydoc_text.read_text().splitlines()[:300]))
    return path


def resume_config(tmp: Path, text: Path, name: str, **trainer) -> str:
    cfg = mlm_config(tmp, text, **{"max_epochs": 2, "limit_val_batches": 3, **trainer})
    cfg["trainer"]["logger"]["init_args"]["name"] = name
    cfg["model"]["init_args"]["encoder_config"] = {"hidden_dropout": 0.1, "attention_dropout": 0.1}
    cfg["checkpoint"] = {"monitor": None, "every_n_train_steps": 2}
    # 28 validation blocks (the first 30 rows), two batches: Lightning sees a SIGTERM sent as the sanity check
    # starts only between its batches
    cfg["data"]["init_args"]["validation_fraction"] = 0.1
    return write_yaml(tmp / f"{name}.yaml", cfg)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, small_text):
    tmp = tmp_path_factory.mktemp("full")
    full = BigModelCLI(args=["fit", "-c", resume_config(tmp, small_text, "full")])
    assert full.trainer.num_training_batches > 6
    return full


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "SIGINT"])
def test_stopped_mid_epoch_then_resumed_matches_an_uninterrupted_run(how, uninterrupted, small_text, tmp_path, capsys):
    """Stopped after step 5 (mid-epoch), resumed from `last`: the same model and metrics as a run that never
    stopped. SIGKILL leaves the step-4 checkpoint; SIGTERM and Ctrl-C save step 5 and exit 128 + signal."""
    config = resume_config(tmp_path, small_text, "stopped")
    last = tmp_path / "runs" / "stopped" / "checkpoints" / "last.ckpt"
    if how == "SIGINT":  # in this process: bigmodel's handler turns Ctrl-C into a stop after the step
        args = ["fit", "-c", config, "--trainer.callbacks+=tests.helpers.SignalAtStep", "--trainer.callbacks.step=5",
                "--trainer.callbacks.signal_name=SIGINT"]
        code, line = run_main(args, capsys)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    else:
        helper = ["--trainer.callbacks+=tests.helpers.KillAtStep", "--trainer.callbacks.step=5"] if how == "SIGKILL" \
            else ["--trainer.callbacks+=tests.helpers.SignalAtStep", "--trainer.callbacks.step=5"]
        proc = subprocess.run([sys.executable, "-m", "bigmodel", "fit", "-c", config, *helper], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
        code, line = proc.returncode, proc.stderr.strip().splitlines()[-1]
    if how == "SIGKILL":
        assert code == -9 and step_of(last) == 4  # the kill left the last good checkpoint
    else:
        assert code == 128 + getattr(signal, how), line
        assert line == (f"bigmodel: stopped by {how} at step 5 (after batch 5 of epoch 0); saved {last}; "
                        "resume with --ckpt_path last")
        assert step_of(last) == 5

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = BigModelCLI(args=["fit", "-c", config, "--ckpt_path", "last"])
    # neither "Checkpoint directory ... exists and is not empty" (its own last.ckpt, continued) nor "your dataloader
    # is not resumable" (it is: the same model and metrics as a run that never stopped, below)
    said = [str(w.message) for w in caught]
    assert not [m for m in said if "not empty" in m or "not resumable" in m], said
    full = uninterrupted
    assert resumed.trainer.global_step == full.trainer.global_step == 2 * full.trainer.num_training_batches
    for key in ("val/loss", "val/acc"):
        torch.testing.assert_close(resumed.trainer.callback_metrics[key], full.trainer.callback_metrics[key],
                                   rtol=0, atol=1e-6)
    for (name, a), b in zip(full.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize("trainer", [{}, {"val_check_interval": 4}])
def test_a_fit_that_max_steps_ended_mid_epoch_resumes_in_that_epoch(trainer, small_text, tmp_path):
    """max_steps 5 stops a fit mid-epoch; resumed with a longer schedule it trains the rest of that epoch: the
    blocks of a run that never stopped, in its order (Lightning counted the epoch as done, so the resume started the
    next epoch and skipped the rest of this one). With a validation at step 4 the step-5 last.ckpt is written after
    Lightning has counted the epoch completed too, not only processed."""
    def fit(name: str, *args: str) -> BigModelCLI:
        record = ["--trainer.callbacks+=tests.helpers.RecordBlocks", f"--trainer.callbacks.dir={tmp_path / name}"]
        config = resume_config(tmp_path, small_text, "run", max_epochs=1, **trainer)
        return BigModelCLI(args=["fit", "-c", config, *record, *args])

    unbroken = fit("unbroken", "--trainer.logger.init_args.name=unbroken")
    first = fit("first", "--trainer.max_steps=5")
    assert torch.load(tmp_path / "runs" / "run" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    resumed = fit("resumed", "--ckpt_path=last")
    blocks = {name: json.loads((tmp_path / name / "rank0.json").read_text())["blocks"]
              for name in ("unbroken", "first", "resumed")}
    assert first.trainer.global_step == 5 < unbroken.trainer.num_training_batches
    assert resumed.trainer.global_step == unbroken.trainer.global_step == unbroken.trainer.num_training_batches
    assert blocks["first"] + blocks["resumed"] == blocks["unbroken"]


def test_a_hangup_stops_a_fit_at_a_saved_step_unless_nohup_ignores_it(small_text, tmp_path, capsys):
    """The terminal window closed or the ssh connection dropped (SIGHUP): the fit stops as on SIGTERM, at a saved
    step, exit 129. Started under nohup (SIGHUP ignored), it trains on to its end and SIGHUP stays ignored."""
    hangup = ["--trainer.callbacks+=tests.helpers.SignalAtStep", "--trainer.callbacks.step=3",
              "--trainer.callbacks.signal_name=SIGHUP", "--trainer.max_steps=5"]
    code, line = run_main(["fit", "-c", resume_config(tmp_path, small_text, "hangup"), *hangup], capsys)
    last = tmp_path / "runs" / "hangup" / "checkpoints" / "last.ckpt"
    assert (code, line) == (129, f"bigmodel: stopped by SIGHUP at step 3 (after batch 3 of epoch 0); saved {last}; "
                                 "resume with --ckpt_path last")
    assert step_of(last) == 3 and signal.getsignal(signal.SIGHUP) is signal.SIG_DFL  # given back
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        code, _ = run_main(["fit", "-c", resume_config(tmp_path, small_text, "nohup"), *hangup], capsys)
        assert code == 0 and signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert step_of(tmp_path / "runs" / "nohup" / "checkpoints" / "last.ckpt") == 5
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_a_run_stopped_by_its_sweep_names_the_sweeps_signal(small_text, tmp_path, capsys, monkeypatch):
    """A sweep stopped by Ctrl-C sends its runs SIGTERM (a second SIGINT would stop them unsaved), having written
    SIGINT to the file its runs know of: the run saves as on any SIGTERM, but its line names the Ctrl-C and it exits
    130, as the sweep does; so does a validate stopped before its result. Without a word from the sweep (the file
    empty: it runs on), a SIGTERM is the run's own."""
    from bigmodel.run.stop_signals import SWEEP_STOP_FILE, stop_cause
    from bigmodel.run.stopping import StopSafely

    cause = tmp_path / "sweep.stop"
    cause.write_text("SIGINT")
    monkeypatch.setenv(SWEEP_STOP_FILE, str(cause))
    config = resume_config(tmp_path, small_text, "swept")
    code, line = run_main(["fit", "-c", config, "--trainer.callbacks+=tests.helpers.SignalAtStep",
                           "--trainer.callbacks.step=3", "--trainer.max_steps=5"], capsys)
    last = tmp_path / "runs" / "swept" / "checkpoints" / "last.ckpt"
    assert (code, line) == (130, f"bigmodel: stopped by the sweep on SIGINT (Ctrl-C) at step 3 (after batch 3 of "
                                 f"epoch 0); saved {last}; resume with --ckpt_path last")
    assert step_of(last) == 3
    code, line = run_main(["validate", "-c", config, "--trainer.callbacks+=tests.helpers.SignalInEvaluation"], capsys)
    assert (code, line) == (130, "bigmodel: stopped by the sweep on SIGINT (Ctrl-C) during validate; no result was "
                                 "written")
    cause.write_text("SIGHUP")
    assert stop_cause(signal.SIGTERM) == (signal.SIGHUP, "the sweep on SIGHUP")
    StopSafely()._on_signal(signal.SIGTERM, None)  # the notice as the signal arrives
    assert capsys.readouterr().err == ("bigmodel: SIGTERM from the sweep on SIGHUP: stopping after this optimizer "
                                       "step and saving last.ckpt\n")
    cause.write_text("SIGTERM")  # the sweep itself was sent SIGTERM: not "the sweep on SIGTERM received"
    StopSafely()._on_signal(signal.SIGTERM, None)
    assert capsys.readouterr().err == ("bigmodel: SIGTERM from the sweep on SIGTERM: stopping after this optimizer "
                                       "step and saving last.ckpt\n")
    assert stop_cause(signal.SIGINT) == (signal.SIGINT, "SIGINT")  # the run's own Ctrl-C (its process group's)
    cause.write_text("")
    assert stop_cause(signal.SIGTERM) == (signal.SIGTERM, "SIGTERM")
    cause.unlink()  # the sweep has ended
    assert stop_cause(signal.SIGTERM) == (signal.SIGTERM, "SIGTERM")


def test_after_a_hangup_output_leaves_the_dead_terminal_only():
    """Writes to a terminal that hung up fail (EIO): such an output goes to /dev/null; a live terminal or a file
    (nohup.out, a log) is left as it is."""
    dead_master, dead = os.openpty()
    live_master, live = os.openpty()
    os.close(dead_master)  # the terminal window closed
    with open(os.devnull, "w") as null_file, tempfile.TemporaryFile() as file:
        with pytest.raises(OSError):
            os.write(dead, b"progress")
        assert leave_hung_up_terminal((dead, live, file.fileno(), null_file.fileno())) == [dead]
        assert os.write(dead, b"progress") == 8 and os.path.samestat(os.fstat(dead), os.fstat(null_file.fileno()))
        assert os.isatty(live) and not os.path.samestat(os.fstat(file.fileno()), os.fstat(null_file.fileno()))
    for fd in (dead, live, live_master):
        os.close(fd)


def test_without_termios_a_hangup_leaves_the_output_as_it_is(monkeypatch):
    """Where the platform has no termios (Windows), the signal handler that calls this still goes on to the save."""
    dead_master, dead = os.openpty()
    os.close(dead_master)
    monkeypatch.setitem(sys.modules, "termios", None)  # import termios now raises ImportError
    try:
        assert leave_hung_up_terminal((dead,)) == []
        with pytest.raises(OSError):
            os.write(dead, b"progress")  # left as it was
    finally:
        os.close(dead)


def test_a_signal_never_splits_an_accumulated_step(small_text, tmp_path, capsys):
    config = resume_config(tmp_path, small_text, "acc", accumulate_grad_batches=2)
    args = ["fit", "-c", config, "--trainer.callbacks+=tests.helpers.SignalAtStep", "--trainer.callbacks.batch=2",
            "--trainer.callbacks.signal_name=SIGINT"]  # batch 2 is the first half of optimizer step 2
    code, line = run_main(args, capsys)
    assert code == 130 and "at step 2 (after batch 4 of epoch 0)" in line
    assert step_of(tmp_path / "runs" / "acc" / "checkpoints" / "last.ckpt") == 2


def test_a_sigterm_before_training_exits_143_not_0(small_text, tmp_path, capsys):
    """Lightning's handler sees it first and stops the sanity check with a SystemExit of status 0."""
    config = resume_config(tmp_path, small_text, "early", accumulate_grad_batches=2)
    code, line = run_main(["fit", "-c", config, "--trainer.callbacks+=tests.helpers.SignalAtSanityCheck"], capsys)
    assert (code, line) == (143, "bigmodel: stopped by SIGTERM before training started; nothing was saved by this stop")
    assert not list((tmp_path / "runs").rglob("*.ckpt"))
    code, line = run_main(["validate", "-c", config, "--trainer.callbacks+=tests.helpers.SignalInEvaluation"], capsys)
    assert (code, line) == (143, "bigmodel: stopped by SIGTERM during validate; no result was written")


@pytest.mark.parametrize("step, logged_steps", [(7, [4, 6]), (5, [4])])
def test_a_signal_stop_logs_the_stopping_step(step, logged_steps, small_text, tmp_path, capsys):
    """The stop is raised after Lightning logged the step it stops at (every log_every_n_steps=5, and always the
    step where a fit stops): the curve, learning rate included, reaches the step last.ckpt holds, with each step
    once. The run, with its checkpoint, keeps its version directory."""
    config = resume_config(tmp_path, small_text, "logged")
    code, line = run_main(["fit", "-c", config, "--trainer.callbacks+=tests.helpers.SignalAtStep",
                           f"--trainer.callbacks.step={step}", "--trainer.callbacks.signal_name=SIGINT"], capsys)
    assert code == 130 and f"stopped by SIGINT at step {step} (after batch {step} of epoch 0)" in line
    version = tmp_path / "runs" / "logged" / "version_0"
    logged = events(str(version))
    # Lightning logs step k's values at k - 1 (the optimizer steps before it): 4 is step 5, 6 the stopping step 7;
    # LearningRateMonitor logs its own as a logged step starts (step 5), StopSafely the stopping step's (step 7)
    assert [e.step for e in logged.Scalars("train/loss")] == logged_steps
    assert [[e.step for e in logged.Scalars(f"lr-AdamW/pg{g}")] for g in (1, 2)] == [logged_steps] * 2
    last = tmp_path / "runs" / "logged" / "checkpoints" / "last.ckpt"
    assert step_of(last) == step
    # each logged lr is the rate its step trained with: the schedule's value at k - 1 for step k, never the next
    # step's (the stopping step's scheduler has stepped when its metrics are logged)
    used = rates_used(last)
    assert [[round(e.value, 9) for e in logged.Scalars(f"lr-AdamW/pg{g}")] for g in (1, 2)] == \
        [[round(used(s + 1)[g - 1], 9) for s in logged_steps] for g in (1, 2)]


def rates_used(checkpoint: Path):
    """The lr of each parameter group in optimizer step k (1-based) of the linear schedule the checkpoint's fit ran."""
    from transformers import get_scheduler

    from bigmodel.tasks.checkpoints import META_KEY
    from bigmodel.tasks.optim import steps

    saved = torch.load(checkpoint, weights_only=False)
    total, bases = saved[META_KEY]["schedule_steps"], saved["lr_schedulers"][0]["base_lrs"]
    unit = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    rule = get_scheduler("linear", unit, num_warmup_steps=steps(0.1, total), num_training_steps=total).lr_lambdas[0]
    assert rule(step_of(checkpoint) - 1) != rule(step_of(checkpoint))  # (the stopping step's rate is not the next's)
    return lambda k: [base * rule(k - 1) for base in bases]


def test_a_stop_waiting_for_the_step_logging_is_raised_at_the_next_hook_if_the_logging_never_comes():
    """Should Lightning no longer log a step where StopSafely waits for it, the stop still comes before any other
    batch, validation or epoch end, and a Lightning without that method stops at once."""
    from types import SimpleNamespace

    from bigmodel.run.stopping import RunStopped, StopSafely

    for hook, args in (("on_train_batch_start", (None, 0)), ("on_validation_start", ()),
                       ("on_train_epoch_end", ()), ("on_train_end", ())):
        stop, stopped = StopSafely(), RunStopped(signal.SIGTERM, "stopped")
        trainer = SimpleNamespace(_logger_connector=SimpleNamespace(update_train_step_metrics=lambda: None))
        stop._raise_after_logging(trainer, stopped)
        with pytest.raises(RunStopped) as raised:
            getattr(stop, hook)(trainer, None, *args)
        assert raised.value is stopped and "update_train_step_metrics" not in vars(trainer._logger_connector)
    with pytest.raises(RunStopped):
        StopSafely()._raise_after_logging(SimpleNamespace(), RunStopped(signal.SIGTERM, "stopped"))


def test_max_steps_mid_epoch_saves_the_final_step(small_text, tmp_path):
    path = write_yaml(tmp_path / "mlm.yaml", mlm_config(tmp_path, small_text, max_steps=19, limit_val_batches=1))
    cli = BigModelCLI(args=["fit", "-c", path])
    assert cli.trainer.num_training_batches == 16  # the fit ended 3 steps into epoch 1, after epoch 0's checkpoint
    assert step_of(tmp_path / "runs" / "mlm" / "checkpoints" / "last.ckpt") == 19


def test_a_failed_fresh_fit_keeps_the_earlier_checkpoints(small_text, tmp_path, capsys):
    """The earlier run's checkpoints move to previous/ only once the new run has written one of its own."""
    path = write_yaml(tmp_path / "mlm.yaml", mlm_config(tmp_path, small_text, max_steps=2, limit_val_batches=1))
    ckpts = tmp_path / "runs" / "mlm" / "checkpoints"
    BigModelCLI(args=["fit", "-c", path])
    earlier = (ckpts / "last.ckpt").read_bytes()

    # fails before its first checkpoint: a bad option value deep in the run, and a fit that trains nothing
    code, line = run_main(["fit", "-c", path, "--trainer.max_epochs", "-1", "--trainer.max_steps", "-1"], capsys)
    assert code == 2 and "the learning-rate schedule needs a length" in line
    BigModelCLI(args=["fit", "-c", path, "--trainer.max_steps", "0"])
    from bigmodel.tasks import MLMTask

    original = MLMTask.training_step
    with pytest.MonkeyPatch.context() as mp:  # a NaN in its first steps: the error must not save over them
        mp.setattr(MLMTask, "training_step", lambda self, b, i: original(self, b, i) * (float("nan") if i else 1))
        code, line = run_main(["fit", "-c", path], capsys)
    assert code == 2 and "non-finite gradients at step 1" in line
    assert (ckpts / "last.ckpt").read_bytes() == earlier and not (ckpts / "previous").exists()

    # a run that writes its own checkpoint moves the earlier ones, whole, to previous/<time>/ (and so Lightning's
    # "Checkpoint directory ... exists and is not empty" is not said)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        BigModelCLI(args=["fit", "-c", path, "--seed_everything", "1"])
    assert not [str(w.message) for w in caught if "not empty" in str(w.message)]
    moved = list((ckpts / "previous").glob("*/last.ckpt"))
    assert len(moved) == 1 and moved[0].read_bytes() == earlier and (ckpts / "last.ckpt").read_bytes() != earlier

    # resuming another checkpoint than the directory's last.ckpt writes over that run's: said, before it happens
    newer = (ckpts / "last.ckpt").read_bytes()
    with pytest.warns(UserWarning, match=re.escape(f"--ckpt_path {moved[0]} is not {ckpts}'s last.ckpt: this fit "
                                                   "writes over last.ckpt there (another run's, or later steps)")):
        BigModelCLI(args=["fit", "-c", path, "--ckpt_path", str(moved[0]), "--trainer.max_steps", "3"])
    assert (ckpts / "last.ckpt").read_bytes() != newer

    # `--ckpt_path last` with only an earlier run's last.ckpt left says so instead of starting over
    (ckpts / "last.ckpt").unlink()
    code, line = run_main(["fit", "-c", path, "--ckpt_path", "last"], capsys)
    assert code == 2 and line.startswith(f"bigmodel: error: --ckpt_path last: {ckpts} has no last.ckpt of this run")
    assert f"resume it with --ckpt_path {moved[0]}" in line


def test_a_failed_command_takes_back_the_empty_version_directory_it_made(small_text, tmp_path, capsys, monkeypatch):
    """A command that fails before any result (config caught late, an error before the first step) removes the
    version_N it opened, so the next run is not version_N+1 beside an empty one; a directory it did not make, one
    of a run name whose fit is running, and a run that saved a checkpoint are kept whole."""
    from bigmodel import UsageError
    from bigmodel.tasks import MLMTask

    config = mlm_config(tmp_path, small_text, max_steps=4, limit_val_batches=1, log_every_n_steps=50)
    config["checkpoint"] = {"monitor": None, "every_n_train_steps": 2}
    path = write_yaml(tmp_path / "mlm.yaml", config)
    name = tmp_path / "runs" / "mlm"
    earlier = name / "version_0"  # an earlier command's, as empty: not this command's to remove
    earlier.mkdir(parents=True)
    (earlier / "config.yaml").write_text("seed_everything: 0\n")

    def versions() -> list[str]:
        return sorted(p.name for p in name.glob("version_*"))

    code, line = run_main(["fit", "-c", path, "--trainer.max_epochs", "-1", "--trainer.max_steps", "-1"], capsys)
    assert code == 2 and "the learning-rate schedule needs a length" in line
    assert versions() == ["version_0"] and (earlier / "config.yaml").exists()

    monkeypatch.setattr(MLMTask, "on_validation_start", lambda self: (_ for _ in ()).throw(UsageError("bad set")),
                        raising=False)
    other = runs.RunLock(str(name / "checkpoints"))  # a fit of this name running in another process
    other.acquire()
    try:
        assert run_main(["validate", "-c", path], capsys) == (2, "bigmodel: error: bad set")
    finally:
        other.release()
    assert versions() == ["version_0", "version_1"]  # (its config.yaml and hparams only)
    assert run_main(["validate", "-c", path], capsys) == (2, "bigmodel: error: bad set")
    assert versions() == ["version_0", "version_1"]
    monkeypatch.delattr(MLMTask, "on_validation_start")

    original = MLMTask.training_step  # fails at step 3, after the step-2 checkpoint: nothing logged but that
    monkeypatch.setattr(MLMTask, "training_step", lambda self, batch, i: original(self, batch, i) if i < 2 else
                        (_ for _ in ()).throw(UsageError("bad batch")))
    assert run_main(["fit", "-c", path], capsys) == (2, "bigmodel: error: bad batch")
    assert versions() == ["version_0", "version_1", "version_2"]
    assert {"config.yaml", "hparams.yaml"} <= {p.name for p in (name / "version_2").iterdir()}
    assert step_of(name / "checkpoints" / "last.ckpt") == 2


def test_commands_started_together_never_share_a_version_directory(small_text, tmp_path, capsys):
    """Lightning's loggers take max(version_N) + 1 by listing the run's directory, so two commands set up at the same
    moment (a script testing two checkpoints at once) chose one version_N and overwrote each other's config.yaml, and
    a failed one's take-back could remove the other's files. Each command claims its own version directory (an
    atomic mkdir) as its loggers are made: its TensorBoard and CSV loggers share it, a version the config names is
    used as given (and, being nobody's new directory, never taken back), and a failed command takes back only its
    own."""
    config = mlm_config(tmp_path, small_text, limit_val_batches=1)
    logger = config["trainer"]["logger"]
    config["trainer"]["logger"] = [logger, {"class_path": "lightning.pytorch.loggers.CSVLogger",
                                            "init_args": logger["init_args"]}]
    both = write_yaml(tmp_path / "both.yaml", config)
    name = tmp_path / "runs" / "mlm"
    first, second = (BigModelCLI(args=["-c", both], run=False) for _ in range(2))  # set up; neither has written
    assert [[lg.log_dir for lg in cli.trainer.loggers] for cli in (first, second)] == \
        [[str(name / "version_0")] * 2, [str(name / "version_1")] * 2]
    assert sorted(p.name for p in name.iterdir()) == ["version_0", "version_1"]

    config["trainer"]["logger"] = {**logger, "init_args": {**logger["init_args"], "version": 0}}
    named = BigModelCLI(args=["-c", write_yaml(tmp_path / "named.yaml", config)], run=False)
    assert named.trainer.log_dir == str(name / "version_0") and named._new_dirs == []

    first._take_back_empty_dirs()  # the first command failed before writing anything: the second's stays
    assert sorted(p.name for p in name.iterdir()) == ["version_1"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        BigModelCLI(args=["validate", "-c", both])  # the next one opens version_2, both loggers writing there
    # the CSV logger finds TensorBoard's files of this command there, not an earlier run's logs it would delete
    assert not [w for w in caught if "exists and is not empty" in str(w.message)], [str(w.message) for w in caught]
    assert {"config.yaml", "metrics.csv", "validate_metrics.json"} <= {p.name for p in (name / "version_2").iterdir()}
    assert sorted(p.name for p in name.iterdir()) == ["version_1", "version_2"]


def test_a_version_taken_between_listing_and_claiming_moves_the_claim_to_the_next_number(tmp_path, monkeypatch):
    """The listing is only where to start: the mkdir decides. One number for all of a command's loggers, in every
    directory they log to (TensorBoard's sub_dir inside the version)."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    tb = TensorBoardLogger(tmp_path / "runs", name="a", sub_dir="train")
    csv = CSVLogger(tmp_path / "csv", name="a")
    (tmp_path / "runs" / "a" / "version_0").mkdir(parents=True)
    (tmp_path / "csv" / "a" / "version_1").mkdir(parents=True)  # another command's claim, after our listing
    from bigmodel.run import log_versions

    monkeypatch.setattr(log_versions, "_next_version", lambda root: 0)
    made = log_versions.claim_log_versions([tb, csv])
    assert (tb.version, csv.version) == (2, 2) and tb.log_dir == str(tmp_path / "runs" / "a" / "version_2" / "train")
    assert made == [(str(tmp_path / "runs" / "a" / "version_2"),) * 2, (str(tmp_path / "csv" / "a" / "version_2"),) * 2]
    assert sorted(p.name for p in (tmp_path / "runs" / "a").iterdir()) == ["version_0", "version_2"]  # 1 given back


def test_taking_back_a_log_directory_leaves_another_runs_files_beside_it(tmp_path):
    """Two commands started into a new runs/ at once: the failed one takes back its own version directory and the
    parents it made only while they are empty, never the other run's files (even its setup files)."""
    from types import SimpleNamespace

    from bigmodel.run import cleanup

    ours, theirs = tmp_path / "runs" / "a" / "version_0", tmp_path / "runs" / "b" / "version_0"
    for directory in (ours, theirs):
        directory.mkdir(parents=True)
        (directory / "config.yaml").write_text("seed_everything: 0\n")
    trainer = SimpleNamespace(strategy=SimpleNamespace(checkpoint_io=None), checkpoint_callbacks=[])
    cleanup.take_back(trainer, [(str(ours), str(tmp_path / "runs"))], own_fit_lock=True)
    assert not (tmp_path / "runs" / "a").exists() and (theirs / "config.yaml").exists()
    cleanup.take_back(trainer, [(str(theirs), str(tmp_path / "runs"))], own_fit_lock=True)
    assert not (tmp_path / "runs").exists()  # all of it this command's, and empty once its files went


def test_a_full_disk_during_the_first_save_moves_nothing(small_text, tmp_path, capsys, monkeypatch):
    path = write_yaml(tmp_path / "mlm.yaml", mlm_config(tmp_path, small_text, max_steps=2, limit_val_batches=1))
    ckpts = tmp_path / "runs" / "mlm" / "checkpoints"
    BigModelCLI(args=["fit", "-c", path])
    before = {p.name: p.read_bytes() for p in ckpts.glob("*.ckpt")}

    from bigmodel.run import checkpoint_io

    class FullDisk:
        def __init__(self, file):
            self.file, self.written = file, 0

        def write(self, data):
            self.written += len(data)
            if self.written > 4096:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.file.write(data)

        def __getattr__(self, name):
            return getattr(self.file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    real_open = open
    monkeypatch.setattr(checkpoint_io, "open", lambda *a, **k: FullDisk(real_open(*a, **k)), raising=False)
    code, line = run_main(["fit", "-c", path], capsys)
    assert code == 2
    assert line == (f"bigmodel: error: cannot use '{ckpts / 'last.ckpt'}': No space left on device; free space there, "
                    "or write the run elsewhere (--trainer.logger.init_args.save_dir)")
    assert {p.name: p.read_bytes() for p in ckpts.glob("*.ckpt")} == before  # whole, in place, nothing moved
    assert not list(ckpts.glob("*.tmp-*")) and not (ckpts / "previous").exists()


def test_a_second_fit_of_a_running_run_name_stops_at_once(small_text, tmp_path, capsys):
    path = write_yaml(tmp_path / "mlm.yaml", mlm_config(tmp_path, small_text, max_steps=1, limit_val_batches=1))
    ckpts = tmp_path / "runs" / "mlm" / "checkpoints"
    other = runs.RunLock(str(ckpts))  # another process's fit: flock is per open file, so this is a real holder
    other.acquire()
    try:
        code, line = run_main(["fit", "-c", path], capsys)
    finally:
        other.release()
    assert code == 2 and line.startswith(f"bigmodel: error: run directory {ckpts} is in use by another fit (pid ")
    assert "give this run another name (--trainer.logger.init_args.name)" in line
    assert not (tmp_path / "runs" / "mlm" / "version_0").exists()  # nothing was built or written
    # the lock file left behind by a finished (or killed) run does not block the next one
    assert (ckpts / runs.LOCK_NAME).exists()
    assert run_main(["fit", "-c", path], capsys)[0] == 0 and (ckpts / "last.ckpt").exists()


@pytest.fixture(scope="module")
def mlm_checkpoint(tmp_path_factory, small_text) -> Path:
    tmp = tmp_path_factory.mktemp("mlm")
    BigModelCLI(args=["fit", "-c", write_yaml(tmp / "mlm.yaml", mlm_config(tmp, small_text, max_steps=2,
                                                                           limit_val_batches=1))])
    return tmp / "runs" / "mlm" / "checkpoints" / "last.ckpt"


def test_bad_checkpoints_and_configs_are_one_line(mlm_checkpoint, small_text, tmp_path, capsys):
    mlm = write_yaml(tmp_path / "mlm.yaml", mlm_config(tmp_path, small_text, max_steps=1, limit_val_batches=1))
    cls = write_yaml(tmp_path / "cls.yaml", finetune_config(tmp_path, str(mlm_checkpoint), str(mlm_checkpoint)))
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(mlm_checkpoint.read_bytes()[:5000])
    (tmp_path / "tab.yaml").write_text("trainer:\n\tmax_steps: 1\n")
    (tmp_path / "list.yaml").write_text("- trainer\n- model\n")
    cases = {
        "missing": (["fit", "-c", mlm, "--ckpt_path", str(tmp_path / "nope.ckpt")],
                    f"--ckpt_path '{tmp_path / 'nope.ckpt'}' does not exist; checkpoints there: {truncated}"),
        "truncated": (["fit", "-c", mlm, "--ckpt_path", str(truncated)],
                      f"--ckpt_path '{truncated}' is not a readable checkpoint"),
        "directory": (["test", "-c", cls, "--ckpt_path", str(tmp_path)], "is a directory; give a .ckpt file"),
        "other task": (["test", "-c", cls, "--ckpt_path", str(mlm_checkpoint)],
                       f"--ckpt_path '{mlm_checkpoint}' is a 'mlm' checkpoint but the config's model is "
                       "bigmodel.tasks.ClassificationTask ('classification')"),
        "tab": (["fit", "-c", str(tmp_path / "tab.yaml")], "line 2 is indented with a tab; YAML indents with spaces"),
        "list": (["fit", "-c", str(tmp_path / "list.yaml")], "holds a list, not a mapping of settings"),
        "config directory": (["fit", "-c", str(tmp_path)], "is a directory; give a YAML file"),
        "fit best without one": (["fit", "-c", mlm, "--ckpt_path", "best"],
                                 f"--ckpt_path '{tmp_path / 'runs' / 'mlm' / 'checkpoints' / 'best.ckpt'}' does not exist"),
        "test best of no run": (["test", "-c", cls, "--trainer.logger.init_args.name", "nosuchrun", "--ckpt_path",
                                 "best"], "does not exist; no run of this name has saved checkpoints here: check the "
                                          "run name (trainer.logger.init_args.name, save_dir) or run fit first"),
        # 'last' outside fit, where no fit saved one, tested a model with no trained weights (exit 0)
        "test last of no run": (["test", "-c", cls, "--trainer.logger.init_args.name", "nosuchrun", "--ckpt_path",
                                 "last"], f"--ckpt_path '{tmp_path / 'runs' / 'nosuchrun' / 'checkpoints' / 'last.ckpt'}' "
                                          "does not exist; no run of this name has saved checkpoints here"),
        "validate last of no last": (["validate", "-c", mlm, "--ckpt_path", "last"],
                                     f"--ckpt_path '{tmp_path / 'runs' / 'mlm' / 'checkpoints' / 'last.ckpt'}' does "
                                     "not exist"),
        "monitor typo": (["fit", "-c", mlm, "--checkpoint.monitor", "val/losss", "--trainer.max_steps", "-1",
                          "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"],
                         "ModelCheckpoint(monitor='val/losss')` could not find the monitored key"),
        "not a directory": (["fit", "-c", mlm, "--trainer.logger.init_args.save_dir", f"{truncated}/runs"],
                            f"cannot use '{truncated}/runs': Not a directory"),
    }
    for name, (args, expected) in cases.items():
        code, line = run_main(args, capsys)
        assert code == 2 and line.startswith("bigmodel: error: ") and expected in line, (name, line)


def test_slurm_requeue_goes_through_lightnings_plugin(uninterrupted, small_text, tmp_path, monkeypatch):
    """On SLURM's requeue signal Lightning saves hpc_ckpt_1.ckpt and calls `scontrol requeue`; the SIGTERM that
    follows saves last.ckpt, links it as hpc_ckpt_2.ckpt and exits 0 (the job goes on); the requeued job resumes
    from that exact step."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'scontrol.args'}\n")
    (bin_dir / "scontrol").chmod(0o755)
    slurm = {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "mlm", "SLURM_JOB_ID": "4242", "SLURM_PROCID": "0",
             "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    config = resume_config(tmp_path, small_text, "slurm", default_root_dir=str(tmp_path))
    signals = ["--trainer.callbacks+=tests.helpers.SignalAtStep", "--trainer.callbacks.step=3",
               "--trainer.callbacks.signal_name=SIGUSR1", "--trainer.callbacks+=tests.helpers.SignalAtStep",
               "--trainer.callbacks.step=5"]
    proc = subprocess.run([sys.executable, "-m", "bigmodel", "fit", "-c", config, *signals], cwd=ROOT,
                          env={**os.environ, **slurm, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].endswith(
        f"SLURM requeued the job, which resumes from {tmp_path / 'hpc_ckpt_2.ckpt'}")
    assert (tmp_path / "scontrol.args").read_text().split() == ["requeue", "4242"]
    assert step_of(tmp_path / "hpc_ckpt_1.ckpt") == 3
    ckpts = tmp_path / "runs" / "slurm" / "checkpoints"
    assert step_of(ckpts / "last.ckpt") == step_of(tmp_path / "hpc_ckpt_2.ckpt") == 5

    for key, value in slurm.items():  # the requeued job: the same command, no --ckpt_path
        monkeypatch.setenv(key, value)
    resumed = BigModelCLI(args=["fit", "-c", config])
    assert resumed.trainer.ckpt_path == str(tmp_path / "hpc_ckpt_2.ckpt")
    assert resumed.trainer.global_step == 2 * resumed.trainer.num_training_batches
    assert not (ckpts / "previous").exists()  # a resumed run continues its checkpoints, it does not archive them
    for (name, a), b in zip(uninterrupted.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


def test_under_ddp_a_signal_to_one_rank_stops_every_rank_after_the_same_step(small_text, tmp_path):
    config = resume_config(tmp_path, small_text, "ddp")
    cmd = [sys.executable, "-m", "bigmodel", "fit", "-c", config, "--trainer.strategy", "ddp", "--trainer.devices",
           "2", "--trainer.callbacks+=tests.helpers.SignalAtStep", "--trainer.callbacks.step=3",
           "--trainer.callbacks.rank=1"]
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=300)
    last = tmp_path / "runs" / "ddp" / "checkpoints" / "last.ckpt"
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert f"stopped by SIGTERM at step 3 (after batch 3 of epoch 0); saved {last}" in proc.stderr
    assert proc.stderr.count("bigmodel: stopped by") == 1, proc.stderr[-3000:]  # rank zero says it, for both
    assert step_of(last) == 3
    # validation's values are global already (torchmetrics synced them): no advice to sync them again
    assert "sync_dist=True" not in proc.stderr, proc.stderr[-3000:]


def test_under_ddp_an_error_in_one_rank_ends_the_command_on_its_one_line(small_text, tmp_path):
    """Rank 1 failing left rank 0's collective without its peer: a 60-line traceback of gloo's "Connection closed by
    peer", exit 1. Rank 0 failing printed its line and exited while rank 1 went on, to print that traceback after
    the command had returned. Now either ends every rank with the failing one's line, last, and its status."""
    runs = {}
    for rank in (0, 1):  # both commands at once: a DDP start costs ~15 s
        cmd = [sys.executable, "-m", "bigmodel", "fit", "-c", resume_config(tmp_path, small_text, f"fail{rank}"),
               "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.callbacks+=tests.helpers.FailOnRank",
               f"--trainer.callbacks.rank={rank}"]
        runs[rank] = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    for rank, proc in runs.items():
        stderr = proc.communicate(timeout=300)[1]
        try:  # the command's whole process group is gone when it returns: no rank prints after it
            os.killpg(proc.pid, 0)
            leftover = True
        except ProcessLookupError:
            leftover = False
        assert proc.returncode == 2 and not leftover, stderr[-3000:]
        assert "Traceback" not in stderr and stderr.count("bigmodel: error:") == 1, stderr[-3000:]
        assert stderr.strip().splitlines()[-1] == f"bigmodel: error: bad input met by rank {rank}: fix it"


def test_predict_and_test_need_only_the_checkpoint_and_their_own_files(tmp_path, capsys):
    """A classifier trained on files that are gone (and with a tokenizer trained on them): test and predict take
    the tokenizer and class names from the checkpoint. Predictions keep non-ASCII text as written."""
    from tests.helpers import write_table

    rows = [(f"the {w} is {'good' if i % 2 else 'bad'}", "pos" if i % 2 else "neg") for i, w in enumerate("ab" * 10)]
    config = {
        "trainer": {"max_epochs": 1, "limit_val_batches": 1, "accelerator": "cpu", "enable_progress_bar": False,
                    "enable_model_summary": False,
                    "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                               "init_args": {"save_dir": str(tmp_path / "runs"), "name": "cls"}}},
        "model": {"class_path": "bigmodel.tasks.ClassificationTask", "init_args": {"encoder": "bert-tiny"}},
        "data": {"class_path": "bigmodel.data.TextClassificationDataModule",
                 "init_args": {"tokenizer": None, "train_files": write_table(tmp_path / "train.csv", rows),
                               "wordpiece_vocab_size": 300, "lowercase": False, "batch_size": 4}},
    }
    path = write_yaml(tmp_path / "cls.yaml", config)
    assert run_main(["fit", "-c", path], capsys)[0] == 0
    (tmp_path / "train.csv").unlink()  # another machine: the config, the checkpoint and new texts only
    texts = tmp_path / "texts.txt"
    texts.write_text("the a is good\n这部电影很好\n", encoding="utf-8")
    out = tmp_path / "pred.jsonl"
    code, line = run_main(["predict", "-c", path, "--ckpt_path", "best", "--data.init_args.predict_files", str(texts),
                           "--predictions.output", str(out)], capsys)
    assert code == 0, line
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and "这部电影很好" in lines[1]  # UTF-8, not \\uXXXX
    assert all('"class_name": "neg"' in x or '"class_name": "pos"' in x for x in lines)
    test_file = write_table(tmp_path / "test.csv", [("the b is good", "pos"), ("the a is bad", "neg")])
    code, line = run_main(["test", "-c", path, "--ckpt_path", "best", "--data.init_args.test_files", test_file], capsys)
    assert code == 0, line


def test_last_ckpt_follows_every_validation_even_when_best_stops_improving(small_text, tmp_path, monkeypatch):
    """Lightning 2.6 rewrites last.ckpt only when a top-k checkpoint is written; a run whose best came early would
    leave a stale last.ckpt for a kill to fall back on."""
    from bigmodel.run.checkpoint_io import AtomicCheckpointIO

    written = []
    real = AtomicCheckpointIO.save_checkpoint

    def record(self, checkpoint, path, storage_options=None):
        written.append((os.path.basename(path), checkpoint["global_step"]))
        return real(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", record)
    config = mlm_config(tmp_path, small_text, max_epochs=3, limit_train_batches=4, limit_val_batches=1)
    config["checkpoint"] = {"monitor": "val/loss", "mode": "max"}  # the falling loss is never 'better' again
    BigModelCLI(args=["fit", "-c", write_yaml(tmp_path / "mlm.yaml", config)])
    assert [step for name, step in written if name == "best.ckpt"] == [4]
    assert [step for name, step in written if name == "last.ckpt"] == [4, 8, 12]


def test_a_sharded_fsdp_checkpoint_directory_is_a_checkpoint(tmp_path):
    """FSDP's sharded checkpoints are directories (shards + Lightning's meta.pt): `--ckpt_path last` finds one and
    the task check reads meta.pt, while any other directory stays a one-line error."""
    from bigmodel.run import directory as runs

    last = tmp_path / "last.ckpt"
    last.mkdir()
    with pytest.raises(ValueError, match="is a directory; give a .ckpt file"):
        runs.read_checkpoint_meta(str(last))
    assert runs.resolve_last(str(tmp_path)) is None
    torch.save({"epoch": 3, "bigmodel": {"task": "mlm"}, "tokenizer": {"tokenizer.json": "{}"}}, last / "meta.pt")
    (last / "__0_0.distcp").write_bytes(b"shard")
    assert runs.resolve_last(str(tmp_path)) == str(last)
    assert runs.read_checkpoint_meta(str(last)) == {"task": "mlm", "_tokenizer": True}


def test_a_loader_worker_killed_by_the_stop_signal_is_reported_as_the_stop():
    """timeout, scancel and kill -- -PGID signal the whole group: the loader workers die of the stop the user asked
    for and torch raises mid-step; the new-user run of the MiniLM fit (num_workers 1) ended in a traceback."""
    from types import SimpleNamespace

    from bigmodel.run.stopping import RunStopped, StopSafely

    stop = StopSafely()
    stop.signum = signal.SIGTERM  # the main process got it too
    trainer = SimpleNamespace(world_size=1, training=True, global_step=92, checkpoint_callbacks=[], fast_dev_run=False,
                              strategy=SimpleNamespace(checkpoint_io=SimpleNamespace(before_first_replace=object())))
    error = RuntimeError("DataLoader worker (pid 6209) is killed by signal: Terminated. ")
    with pytest.raises(RunStopped, match=r"^stopped by SIGTERM at step 92 \(the signal reached the data loader's "
                                         r"workers too\); no checkpoint saved") as stopped:
        stop.on_exception(trainer, None, error)
    assert stopped.value.exit_code == 143
    stop.signum = None  # without a stop request a dead worker is a failure, reported as before
    assert stop.on_exception(trainer, None, error) is None


def test_one_ctrl_c_delivered_twice_is_one_stop_and_a_later_one_stops_at_once(monkeypatch, capsys):
    """``timeout -s INT`` signals the fit, then its process group: the same Ctrl-C arrives twice at once, and must
    not be taken for the second Ctrl-C that stops without saving. A press after ``SAME_SIGNAL_S`` still is one."""
    import bigmodel.run.stopping as stopping

    stop = stopping.StopSafely()
    now = [100.0]
    monkeypatch.setattr(stopping.time, "monotonic", lambda: now[0])
    stop._on_signal(signal.SIGINT, None)
    now[0] += 0.01
    stop._on_signal(signal.SIGINT, None)  # the echo: no KeyboardInterrupt
    assert stop.signum == signal.SIGINT
    now[0] += stopping.SAME_SIGNAL_S
    with pytest.raises(KeyboardInterrupt):
        stop._on_signal(signal.SIGINT, None)
    assert capsys.readouterr().err.count("SIGINT received") == 1



@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
def test_ckpt_path_last_with_only_an_archived_last_gives_advice_that_fits_the_command(tmp_path, subcommand):
    """Only ``previous/<time>/last.ckpt`` is left: fit may resume it or start afresh; validate/test/predict have
    nothing to start afresh, so they are told to use it."""
    from bigmodel.run import directory as runs

    archived = tmp_path / "previous" / "2026-12-07_10-00-00" / "last.ckpt"
    archived.parent.mkdir(parents=True)
    archived.write_text("weights")
    with pytest.raises(FileNotFoundError) as error:
        runs.resolve_last(str(tmp_path), subcommand)
    message = str(error.value)
    assert message.startswith(f"--ckpt_path last: {tmp_path} has no last.ckpt of this run; an earlier run's "
                              f"checkpoints were moved to {archived.parent}: ")
    if subcommand == "fit":
        assert message.endswith(f"resume it with --ckpt_path {archived}, or drop --ckpt_path to start afresh")
    else:
        assert message.endswith(f"to {subcommand} it, use --ckpt_path {archived}")
        assert "afresh" not in message
