"""Standard Lightning features a researcher adds on the ``bigmodel`` command line (callbacks, trainer flags) work
with bigmodel's own callbacks, on the offline digits quickstart (in-process, a few steps)."""

import re
import warnings
from pathlib import Path

import pytest
import torch

from bigmodel.commands.cli import BigModelCLI
from bigmodel.run.stopping import RunStopped

ROOT = Path(__file__).resolve().parents[1]
DIGITS = str(ROOT / "experiments" / "quickstart" / "digits_cnn.yaml")


def digits(command: str, tmp: Path, *args: str) -> list[str]:
    """``bigmodel <command>`` of the digits CNN quickstart, writing under ``tmp``, small and quiet."""
    return [command, "-c", DIGITS, "--trainer.logger.init_args.save_dir", str(tmp), "--trainer.accelerator", "cpu",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.limit_val_batches", "2", *args]


def warned(args: list[str]) -> tuple[BigModelCLI, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = BigModelCLI(args=args)
    return cli, [str(w.message) for w in caught]


def test_evaluating_without_a_checkpoint_says_the_results_are_a_random_models(tmp_path):
    _, said = warned(digits("validate", tmp_path))
    best = tmp_path / "digits-cnn" / "checkpoints" / "best.ckpt"
    assert any(m.startswith("validate without --ckpt_path or init_from: these results are a randomly initialised "
                            "model's") and f"--ckpt_path {best}" in m for m in said), said
    BigModelCLI(args=digits("fit", tmp_path, "--trainer.max_steps", "2", "--trainer.limit_train_batches", "2"))
    _, said = warned(digits("test", tmp_path, "--ckpt_path", str(best), "--trainer.limit_test_batches", "2"))
    assert not any("randomly initialised" in m for m in said), said


def test_a_fit_early_stopping_ended_mid_epoch_says_so_and_resumes_with_the_patience_given(tmp_path, caplog):
    """Early stopping ends a fit at a mid-epoch validation, in one line (Lightning's ``verbose: false`` said
    nothing): last.ckpt holds that step, and ``--ckpt_path last`` with a larger patience trains on until that
    patience runs out (Lightning restored the checkpoint's patience: the resume stopped at its first validation)."""
    def fit(patience: int, *args: str) -> BigModelCLI:
        never_better = ["--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor=val/loss",
                        "--trainer.callbacks.min_delta=10", f"--trainer.callbacks.patience={patience}"]
        return BigModelCLI(args=digits("fit", tmp_path, "--trainer.max_epochs", "2", "--trainer.limit_train_batches",
                                       "12", "--trainer.val_check_interval", "0.25", *never_better, *args))

    with caplog.at_level("INFO"):
        first = fit(1)
    assert ("EarlyStopping ended the fit at step 6 (epoch 0): Monitored metric val/loss did not improve in the last "
            "1 records") in caplog.text, caplog.text
    caplog.clear()
    last = tmp_path / "digits-cnn" / "checkpoints" / "last.ckpt"
    assert first.trainer.global_step == 6 and torch.load(last, weights_only=False)["global_step"] == 6
    with caplog.at_level("INFO"):
        resumed = fit(3, "--ckpt_path", "last")
    assert resumed.trainer.global_step == 12  # validations at 9 and 12 without improvement: 3 in all, mid-run
    assert caplog.text.count("EarlyStopping ended the fit") == 1 and "at step 12 (epoch 0)" in caplog.text
    assert torch.load(last, weights_only=False)["global_step"] == 12


def test_the_learning_rate_finders_lr_is_the_one_trained_with_and_saved(tmp_path):
    """LearningRateFinder's suggestion replaces the configured lr for the whole schedule (the schedule kept the
    configured one as its base: training ran at 3e-3 while the checkpoint said the finder's)."""
    cli = BigModelCLI(args=digits("fit", tmp_path, "--trainer.max_steps", "4", "--trainer.limit_train_batches", "19",
                                  "--trainer.callbacks+=LearningRateFinder",
                                  "--trainer.callbacks.num_training_steps=20",
                                  "--trainer.callbacks.early_stop_threshold=null"))
    found = cli.model.hparams.lr
    assert found != 3e-3
    saved = torch.load(tmp_path / "digits-cnn" / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["hyper_parameters"]["lr"] == found
    assert {g["initial_lr"] for g in saved["optimizer_states"][0]["param_groups"]} == {found}
    scheduler = cli.trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.base_lrs == [found] * len(scheduler.base_lrs)
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] == found * scheduler.lr_lambdas[0](4)


def test_the_model_stochastic_weight_averaging_averaged_is_saved(tmp_path):
    """SWA moves its average into the model as training ends, after the last validation's save: swa.ckpt holds
    that model (it was lost with the process); last.ckpt keeps the last step's own weights, to resume from."""
    cli = BigModelCLI(args=digits("fit", tmp_path, "--trainer.max_epochs", "3", "--trainer.limit_train_batches", "4",
                                  "--trainer.callbacks+=StochasticWeightAveraging", "--trainer.callbacks.swa_lrs=0.001",
                                  "--trainer.callbacks.swa_epoch_start=1"))
    checkpoints = tmp_path / "digits-cnn" / "checkpoints"
    swa, last = (torch.load(checkpoints / name, weights_only=False) for name in ("swa.ckpt", "last.ckpt"))
    assert swa["global_step"] == last["global_step"] == 12
    for name, value in cli.model.state_dict().items():
        torch.testing.assert_close(swa["state_dict"][name], value, rtol=0, atol=0, msg=name)
    assert not torch.equal(last["state_dict"]["net.features.0.weight"], swa["state_dict"]["net.features.0.weight"])


def test_a_default_root_dir_that_moves_nothing_says_where_the_run_goes(tmp_path):
    """bigmodel's logger has its own directory, so ``--trainer.default_root_dir`` alone moved nothing, silently."""
    root = tmp_path / "scratch"
    _, said = warned(digits("validate", tmp_path, "--trainer.default_root_dir", str(root)))
    run = tmp_path / "digits-cnn"
    assert f"--trainer.default_root_dir {root}: this run's logs and checkpoints go to the logger's directory {run}; " \
           f"give --trainer.logger.init_args.save_dir to put them under {root}" in said, said
    _, said = warned(digits("validate", tmp_path, "--trainer.default_root_dir", str(tmp_path)))
    assert not any(m.startswith("--trainer.default_root_dir") for m in said), said


def test_a_labs_own_model_checkpoint_beside_bigmodels_gives_no_directory_warning(tmp_path):
    """A ModelCheckpoint added for periodic snapshots writes into the run's checkpoints/ without Lightning's
    "exists and is not empty" warning, which the run's own .fit.lock set off on every fresh fit."""
    _, said = warned(digits("fit", tmp_path, "--trainer.max_steps", "4", "--trainer.limit_train_batches", "2",
                            "--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.every_n_train_steps=2",
                            "--trainer.callbacks.save_top_k=-1"))
    assert not any("exists and is not empty" in m for m in said), said
    names = sorted(p.name for p in (tmp_path / "digits-cnn" / "checkpoints").glob("*.ckpt"))
    assert names == ["best.ckpt", "epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt", "last.ckpt"]


def test_a_gradient_accumulation_schedule_sets_the_lr_schedules_length(tmp_path):
    """GradientAccumulationScheduler {0: 1, 1: 2} over 2 epochs of 4 batches steps 4 + 2 times: the cosine schedule
    is built for those 6 steps and ends at zero (it was built for 8, Lightning counting one batch a step)."""
    cli = BigModelCLI(args=digits("fit", tmp_path, "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "4",
                                  "--trainer.callbacks+=GradientAccumulationScheduler",
                                  "--trainer.callbacks.scheduling={0: 1, 1: 2}"))
    assert cli.trainer.global_step == cli.model._schedule_steps == 6
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] == 0.0


def test_the_batch_size_finders_batch_size_sets_the_lr_schedules_length(tmp_path):
    """BatchSizeFinder, from 16 with 2 trials, trains at batch size 32 (the config's is 64): the schedule is built
    for the steps of that batch size and ends at zero (it was built for 64's, and its lr went down and up again)."""
    cli = BigModelCLI(args=digits("fit", tmp_path, "--trainer.max_epochs", "1", "--trainer.callbacks+=BatchSizeFinder",
                                  "--trainer.callbacks.init_val=16", "--trainer.callbacks.max_trials=2",
                                  "--trainer.callbacks.steps_per_trial=1"))
    assert cli.datamodule.hparams.batch_size == 32
    assert cli.trainer.global_step == cli.model._schedule_steps == 1257 // 32  # (the last, partial batch dropped)
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] == 0.0


@pytest.mark.parametrize("schedule", [["--trainer.max_steps", "6", "--trainer.val_check_interval", "2"],
                                      ["--trainer.max_epochs", "3", "--trainer.limit_train_batches", "2"]],
                         ids=["validations mid-epoch", "validations at epoch ends"])
def test_checkpoints_every_n_steps_choose_the_best_from_the_weights_validated(tmp_path, caplog, schedule):
    """Saves every 3 steps, validations every 2: Lightning chose best.ckpt at the step saves by the last
    validation's score (step 3's weights under step 2's val/acc, step 6's under step 4's; with validations at epoch
    ends it chose none there either): best.ckpt is now the validated step with the best score, and validating it
    gives that score."""
    with caplog.at_level("INFO"):
        fit = BigModelCLI(args=digits("fit", tmp_path, *schedule, "--checkpoint.every_n_train_steps", "3"))
    scores = {int(step): float(acc) for step, acc in re.findall(r"validation at step (\d+): val/acc ([\d.]+)",
                                                                  caplog.text)}
    assert sorted(scores) == [2, 4, 6]
    callback = fit.trainer.checkpoint_callback
    best = torch.load(callback.best_model_path, weights_only=False)
    assert best["global_step"] == max(scores, key=scores.get)
    assert callback.best_model_score.item() == pytest.approx(max(scores.values()), abs=1e-3)
    assert torch.load(callback.last_model_path, weights_only=False)["global_step"] == 6
    validated = BigModelCLI(args=digits("validate", tmp_path, "--ckpt_path", callback.best_model_path))
    assert validated.trainer.callback_metrics["val/acc"].item() == pytest.approx(callback.best_model_score.item())


def test_overfit_batches_trains_the_same_first_batches_every_epoch(tmp_path):
    """``--trainer.overfit_batches 2``: Lightning swapped bigmodel's resumable sampler for one of plain indices,
    which the (epoch, index) dataset could not read (a TypeError in the first batch). Now 2 batches an epoch, the
    data's first, in order, and the lr schedule built for those steps ends at zero."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = BigModelCLI(args=digits("fit", tmp_path, "--trainer.max_epochs", "2", "--trainer.overfit_batches", "2"))
    assert not any("turning off the train dataloader shuffling" in str(w.message) for w in caught)
    assert cli.trainer.global_step == cli.model._schedule_steps == 4
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] == 0.0
    assert [i for _, i in cli.trainer.train_dataloader.sampler][:3] == [0, 1, 2]


def test_a_fit_reloading_its_dataloaders_resumes_mid_epoch_exactly(tmp_path):
    """``--trainer.reload_dataloaders_every_n_epochs 1``, stopped mid-epoch and resumed: the same weights as a fit
    that never stopped (the loader rebuilt as the resumed epoch started trained that epoch from its first batch)."""
    common = ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "6",
              "--trainer.reload_dataloaders_every_n_epochs", "1"]
    full = BigModelCLI(args=digits("fit", tmp_path / "full", *common))
    stop = ["--trainer.callbacks+=tests.helpers.SignalAtStep", "--trainer.callbacks.step=8",
            "--trainer.callbacks.signal_name=SIGINT"]
    with pytest.raises(RunStopped, match="at step 8"):
        BigModelCLI(args=digits("fit", tmp_path / "stopped", *common, *stop))
    resumed = BigModelCLI(args=digits("fit", tmp_path / "stopped", *common, "--ckpt_path", "last"))
    assert resumed.trainer.global_step == full.trainer.global_step == 12
    for (name, a), b in zip(full.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("given", [["DeviceStatsMonitor"], ["bigmodel.run.progress.ProgressLog",
                                                              "--trainer.callbacks.every_seconds=0"]])
def test_callbacks_given_with_equals_keep_bigmodels_own(given, tmp_path):
    """``--trainer.callbacks=X`` (one callback, not a list) failed with "'X' object is not iterable"; it replaces
    the config's callbacks only: bigmodel's own are all there, a ProgressLog given replacing the default one."""
    cli = BigModelCLI(args=digits("validate", tmp_path, f"--trainer.callbacks={given[0]}", *given[1:]))
    names = [type(cb).__name__ for cb in cli.trainer.callbacks]
    for own in ("StopSafely", "KeepPreviousCheckpoints", "EarlyStoppingNotes", "ProgressLog", "BestScoreHParam",
                "AttentionMaps", "Checkpoint"):
        assert names.count(own) == 1, names
    assert given[0].rsplit(".", 1)[-1] in names


def test_a_fit_max_time_ended_says_so_and_a_resume_with_no_time_left_says_nothing_trained(tmp_path, caplog):
    """max_time ends a fit in a line naming the step and how to train on; Lightning's Timer counts the time of the
    fits a checkpoint continues, so a resume with the same max_time stopped before its first step, saying only
    "Time limit reached". (The time already spent is set in last.ckpt: just short of the limit, then past it.)"""
    last = tmp_path / "digits-cnn" / "checkpoints" / "last.ckpt"

    def resume(spent: float) -> list[str]:
        saved = torch.load(last, weights_only=False)
        saved["callbacks"]["Timer"]["time_elapsed"]["train"] = spent
        torch.save(saved, last)
        return digits("fit", tmp_path, "--trainer.max_steps", "6", "--trainer.limit_train_batches", "2",
                      "--trainer.max_time", "00:00:10:00", "--ckpt_path", "last")

    BigModelCLI(args=digits("fit", tmp_path, "--trainer.max_steps", "2", "--trainer.limit_train_batches", "2",
                            "--trainer.max_time", "00:00:10:00"))
    with caplog.at_level("INFO"):
        assert BigModelCLI(args=resume(600 - 1e-6)).trainer.global_step == 3
    assert "--trainer.max_time (600 s) ended the fit at step 3 (epoch 1); to train on, resume with --ckpt_path last " \
           "and a larger max_time" in caplog.text, caplog.text
    resumed, said = warned(resume(700))
    assert resumed.trainer.global_step == 3
    assert "--trainer.max_time (600 s) was spent before this fit began: the fits of the checkpoint it continues " \
           "trained 700 s, and the limit counts them; nothing trained (still step 3): give a larger max_time to train " \
           "on" in said, said


def test_a_stop_signal_with_checkpointing_off_promises_no_last_checkpoint(tmp_path, capsys):
    """``--trainer.enable_checkpointing false``: SIGTERM's notice said "saving last.ckpt", which was never written."""
    with pytest.raises(RunStopped, match=r"at step 1 .*; no checkpoint saved \(checkpointing off\)$"):
        BigModelCLI(args=digits("fit", tmp_path, "--trainer.max_steps", "4", "--trainer.limit_train_batches", "2",
                                "--trainer.enable_checkpointing", "false",
                                "--trainer.callbacks+=tests.helpers.SignalAtStep", "--trainer.callbacks.step=1"))
    err = capsys.readouterr().err
    assert "bigmodel: SIGTERM received: stopping after this optimizer step and saving nothing (checkpointing off)" \
        in err, err
    assert not list(tmp_path.rglob("*.ckpt"))


def test_a_last_ckpt_of_a_step_save_keeps_the_best_checkpoints_record(tmp_path):
    """A step save (every 5 steps, validations every 2) writes last.ckpt with the checkpoint callback's state under
    its own key: a resume from it knows the best so far (the state was stored under another key, so a resume lost
    best_model_score and the first validation after it overwrote best.ckpt whatever its score)."""
    fit = BigModelCLI(args=digits("fit", tmp_path, "--trainer.max_steps", "5", "--trainer.val_check_interval", "2",
                                  "--checkpoint.every_n_train_steps", "5"))
    key = fit.trainer.checkpoint_callback.state_key
    saved = torch.load(fit.trainer.checkpoint_callback.last_model_path, weights_only=False)
    assert saved["global_step"] == 5 and key in saved["callbacks"], list(saved["callbacks"])
    assert saved["callbacks"][key]["best_model_score"] == fit.trainer.checkpoint_callback.best_model_score
