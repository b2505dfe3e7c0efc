"""Fused AdamW where torch has it, gradient clipping that works with it (Lightning refuses clipping for fused
optimizers under bf16-mixed), and the sync-free non-finite check it enables."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from bigmodel.nn import SmallCNN
from bigmodel.tasks import ClassificationTask, base
from bigmodel.tasks.optim import build_optimizer, parameter_groups


def cnn(num_classes: int) -> SmallCNN:
    return SmallCNN(num_classes, image_size=8)


class Recorded(ClassificationTask):
    """Records the gradients' total norm after clipping, and optionally poisons the loss at some batches."""

    def __init__(self, poison: list[int] = (), lightning_clip: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.poison, self.lightning_clip = list(poison), lightning_clip
        self.clipped_norms: list[float] = []

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if batch_idx in self.poison else loss

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        if self.lightning_clip:  # Lightning's own path (the precision plugin's clip_gradients)
            L.LightningModule.configure_gradient_clipping(self, optimizer, gradient_clip_val, gradient_clip_algorithm)
        else:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        self.clipped_norms.append(float(torch.nn.utils.get_total_norm(grads)))


def fit(task: ClassificationTask, steps: int = 6, precision: str = "32-true", **trainer) -> L.Trainer:
    torch.manual_seed(0)
    data = [{"pixel_values": torch.randn(1, 8, 8), "labels": torch.tensor(i % 3)} for i in range(4 * steps)]
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, precision=precision, **trainer)
    trainer.fit(task, DataLoader(data, batch_size=4))
    return trainer


def task(**kwargs) -> Recorded:
    torch.manual_seed(0)
    return Recorded(num_classes=3, backbone=cnn, lr=1e-2, warmup=0, **kwargs)


def test_build_optimizer_is_fused_where_torch_has_it_and_foreach_otherwise():
    model = cnn(3)
    fused, _ = build_optimizer(model, 1e-3, 0.01, (0.9, 0.999), 1e-6, "constant", 0, total_steps=10)
    assert fused.defaults["fused"] is True and fused._step_supports_amp_scaling  # CPU has the fused kernel
    plain, _ = build_optimizer(model, 1e-3, 0.01, (0.9, 0.999), 1e-6, "constant", 0, total_steps=10, fused=False)
    assert not plain.defaults["fused"] and plain.defaults["foreach"] is True
    assert [len(g["params"]) for g in fused.param_groups] == [len(g["params"]) for g in parameter_groups(model, 0.01)]


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_clipping_with_the_fused_optimizer_matches_lightnings_clipping_of_foreach_adamw(precision):
    clip = 0.05  # well below these gradients' norms: every step is clipped
    ours = task()
    trainer = fit(ours, precision=precision, gradient_clip_val=clip)
    assert trainer.optimizers[0].defaults["fused"] is True and trainer.global_step == 6
    reference = task(lightning_clip=True)
    with pytest.MonkeyPatch.context() as mp:  # the reference: foreach AdamW clipped by Lightning, as before
        mp.setattr(base, "build_optimizer", lambda *args, **kw: build_optimizer(*args, **{**kw, "fused": False}))
        fit(reference, precision=precision, gradient_clip_val=clip)
        assert not reference.trainer.optimizers[0].defaults["fused"]
    assert max(ours.clipped_norms) == pytest.approx(clip, rel=1e-4)  # the clip bounds the norm
    assert max(reference.clipped_norms) == pytest.approx(clip, rel=1e-4)
    for (name, a), b in zip(ours.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)  # fused vs foreach rounding


def test_lightning_itself_refuses_to_clip_a_fused_optimizer_under_bf16_mixed():
    """Why the task clips on its own: Lightning's path refuses (if it ever stops refusing, this can go)."""
    with pytest.raises(RuntimeError, match="does not allow for gradient clipping"):
        fit(task(lightning_clip=True), precision="bf16-mixed", gradient_clip_val=1.0, steps=1)


def test_a_nonfinite_step_is_skipped_on_the_device_step_count_included():
    skipped = task(poison=[1], nonfinite="skip")
    trainer = fit(skipped, gradient_clip_val=1.0)
    assert skipped.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in skipped.parameters())
    steps = {float(s["step"]) for s in trainer.optimizers[0].state.values()}
    assert steps == {5.0}  # 6 optimizer steps, the bad one not counted by AdamW


def test_stop_names_the_first_bad_step_at_the_next_read(monkeypatch):
    reads = []
    original = ClassificationTask._read_nonfinite
    monkeypatch.setattr(ClassificationTask, "_read_nonfinite",
                        lambda self: (reads.append(self.global_step), original(self))[1])
    stopped = task(poison=[1, 2], nonfinite="stop")
    with pytest.raises(FloatingPointError, match=r"non-finite gradients at step 1 \(epoch 0, batch 1 of the epoch\); "
                                                 r"that optimizer step was skipped \(2 skipped by step 3"):
        fit(stopped, log_every_n_steps=3)
    assert reads == [3]  # read back once, at the logging step; not at every step
    assert all(torch.isfinite(p).all() for p in stopped.parameters())


def test_a_checkpoint_of_a_foreach_optimizer_resumes_fused_with_the_device_check(tmp_path):
    """torch restores the saved groups' fused/foreach flags with the state; the resumed run keeps its own."""
    old = task()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(base, "build_optimizer", lambda *args, **kw: build_optimizer(*args, **{**kw, "fused": False}))
        trainer = fit(old, steps=2)
    trainer.save_checkpoint(tmp_path / "old.ckpt")
    resumed = task(poison=[3], nonfinite="skip")
    torch.manual_seed(0)
    data = [{"pixel_values": torch.randn(1, 8, 8), "labels": torch.tensor(i % 3)} for i in range(24)]
    trainer = L.Trainer(accelerator="cpu", max_steps=5, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(resumed, DataLoader(data, batch_size=4), ckpt_path=tmp_path / "old.ckpt")
    assert all(g["fused"] for g in trainer.optimizers[0].param_groups) and resumed.skipped_steps == 1
    assert {float(s["step"]) for s in trainer.optimizers[0].state.values()} == {4.0}  # 2 + 3 steps, one skipped


def test_the_check_and_the_clipping_read_nothing_back_from_the_device(monkeypatch):
    """No tensor becomes a Python number in the hooks of a step (on a GPU each would wait for the device)."""
    def refuse(self, *args):
        raise AssertionError("a host sync in the optimizer-step hooks")

    def guarded(hook):
        def run(self, *args, **kwargs):
            with pytest.MonkeyPatch.context() as mp:
                for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
                    mp.setattr(torch.Tensor, name, refuse)
                return hook(self, *args, **kwargs)
        return run

    monkeypatch.setattr(base.Task, "on_before_optimizer_step", guarded(base.Task.on_before_optimizer_step))
    monkeypatch.setattr(base.Task, "configure_gradient_clipping", guarded(base.Task.configure_gradient_clipping))
    skipped = task(poison=[1], nonfinite="skip")
    fit(skipped, gradient_clip_val=1.0, precision="bf16-mixed")
    assert skipped.skipped_steps == 1


class ShardedStandIn(L.pytorch.strategies.FSDPStrategy):
    """Rank 0 of two under FSDP, on CPU (Lightning runs FSDP on GPUs only): this rank holds the gradients of
    ``params[:half]``, the other rank those of the rest. ``model.clip_grad_norm_`` does what FSDP's does: the total
    norm over both ranks' shards (an all-reduce of squared norms, here the other rank's given), every local
    gradient scaled by max_norm / (total + 1e-6) when that is below 1."""

    model = None  # FSDPStrategy's property: here the wrapped module stand-in itself

    def __init__(self, local: list[torch.nn.Parameter], other_sq_norm: torch.Tensor) -> None:
        super().__init__()
        self.calls: list[float] = []

        def clip_grad_norm_(max_norm: float) -> torch.Tensor:
            self.calls.append(max_norm)
            local_sq = sum(p.grad.pow(2).sum() for p in local if p.grad is not None)
            total = (local_sq + other_sq_norm).sqrt()
            torch.nn.utils.clip_grads_with_norm_([p for p in local if p.grad is not None], max_norm, total)
            return total

        self.model = type("Wrapped", (), {"clip_grad_norm_": staticmethod(clip_grad_norm_)})()

    def reduce(self, tensor, *args, **kwargs):  # the other rank's gradients are finite: its flag is 0
        return tensor

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        return decision


@pytest.mark.parametrize("fused", [True, False])
def test_fsdp_clipping_uses_the_norm_over_all_shards_not_this_ranks(fused):
    torch.manual_seed(0)
    model = task()
    model.net(torch.randn(4, 1, 8, 8)).logsumexp(-1).sum().mul(10).backward()
    params = list(model.net.parameters())
    half = len(params) // 2
    full = [p.grad.clone() for p in params]
    norm = torch.nn.utils.get_total_norm(full)
    assert norm > 1  # well above the clip
    reference = [g * (0.05 / (norm + 1e-6)) for g in full]  # the whole model clipped by its norm (torch's formula)
    optimizer, _ = build_optimizer(model.net, 1e-3, 0.01, (0.9, 0.999), 1e-6, "constant", 0, total_steps=1,
                                   fused=fused)
    for p in params[half:]:
        p.grad = None  # on the other rank
    strategy = ShardedStandIn(params[:half], torch.stack([g.pow(2).sum() for g in full[half:]]).sum())
    model.trainer = type("Trainer", (), {"strategy": strategy, "world_size": 2, "global_step": 0, "current_epoch": 0,
                                         "precision_plugin": L.pytorch.plugins.Precision()})()
    model.on_before_optimizer_step(optimizer)
    assert model._grad_norm is None  # this rank's norm is no norm of the model: not kept for the clipping
    model.configure_gradient_clipping(optimizer, 0.05, "norm")
    assert strategy.calls == [0.05] and model._grad_norm is None
    for p, expected in zip(params[:half], reference[:half]):
        torch.testing.assert_close(p.grad, expected)
    local = torch.nn.utils.get_total_norm([p.grad for p in params[:half]])
    assert local < 0.05 * 0.9  # this rank's share of the clipped norm, not the clip value itself


@pytest.mark.parametrize("schedule", ["wsd", "wsd_sqrt"])
def test_warmup_stable_decay_follows_its_formula(schedule):
    """Linear warmup over 10 of 100 steps, the peak held, then down to zero over the last 20 (decay 0.2): linearly
    (wsd) or as 1 - sqrt(progress) (wsd_sqrt, ModernBERT's)."""
    lr, total, warmup, decay = 1e-3, 100, 10, 20
    optimizer, scheduler = build_optimizer(cnn(3), lr, 0.0, (0.9, 0.999), 1e-6, schedule, 0.1, total, decay=0.2)
    seen = {}
    for step in range(total + 1):
        seen[step] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()

    def expected(step: int) -> float:
        if step < warmup:
            return lr * step / warmup
        if step < total - decay:
            return lr
        progress = (step - (total - decay)) / decay
        return lr * (1 - progress if schedule == "wsd" else 1 - progress**0.5)

    for step in (0, 5, 10, 50, 79, 80, 85, 90, 99, 100):
        assert seen[step] == pytest.approx(expected(step), abs=1e-12), step
    assert seen[85] == pytest.approx(lr * (0.75 if schedule == "wsd" else 1 - 0.25**0.5))


def test_warmup_stable_decay_refuses_phases_longer_than_the_run():
    with pytest.raises(ValueError, match=r"warmup \(60 steps\) and decay \(50 steps\) must fit in the run's 100"):
        build_optimizer(cnn(3), 1e-3, 0.0, (0.9, 0.999), 1e-6, "wsd", 60, 100, decay=0.5)


def test_a_task_passes_schedule_wsd_and_its_decay_to_the_scheduler():
    trainer = fit(task(schedule="wsd", decay=0.5))  # 6 steps: 3 at the peak, 3 decaying
    factor = trainer.lr_scheduler_configs[0].scheduler.lr_lambdas[0]
    assert [factor(s) for s in range(7)] == pytest.approx([1, 1, 1, 1, 2 / 3, 1 / 3, 0])


def test_resuming_with_more_steps_says_the_schedule_is_recomputed_and_how_the_lr_jumps(tmp_path):
    """A cosine schedule ran to lr 0 at step 4; resumed with max_steps 6 it is rebuilt over 6 steps (the schedule
    math stays as it is): said once, with both lengths and the lr before and after."""
    trainer = fit(task(schedule="cosine"), steps=4)
    trainer.save_checkpoint(tmp_path / "old.ckpt")
    assert torch.load(tmp_path / "old.ckpt", weights_only=True)["bigmodel"]["schedule_steps"] == 4
    torch.manual_seed(0)
    data = [{"pixel_values": torch.randn(1, 8, 8), "labels": torch.tensor(i % 3)} for i in range(24)]
    trainer = L.Trainer(accelerator="cpu", max_steps=6, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    with pytest.warns(UserWarning) as caught:
        trainer.fit(task(schedule="cosine"), DataLoader(data, batch_size=4), ckpt_path=tmp_path / "old.ckpt")
    said = [str(w.message) for w in caught if "schedule" in str(w.message)]
    # cosine over 6 steps at step 4: 0.01 * 0.5 * (1 + cos(pi * 4 / 6)) = 0.0025
    assert said == ["the learning-rate schedule was built for 4 steps; this fit runs 6: it is recomputed over 6 steps "
                    "from step 4 (lr jumps from 0 to 0.0025)"]


def test_a_checkpoint_of_bigmodels_training_loader_resumes_with_a_plain_one(tmp_path):
    """bigmodel's training loader is marked resumable (``data.base.ResumableLoader``: the data module holds the
    position) and keeps no state of its own: Lightning's empty entry for it is left out of checkpoints, or a resume
    with another, plain loader (a lab's own data module) failed: "0 stateful loaders, but found 1 states"."""
    from bigmodel.data.base import ResumableLoader

    torch.manual_seed(0)
    data = [{"pixel_values": torch.randn(1, 8, 8), "labels": torch.tensor(i % 3)} for i in range(24)]
    first = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)
    first.fit(task(), ResumableLoader(data, batch_size=4))
    first.save_checkpoint(tmp_path / "mid-epoch.ckpt")
    saved = torch.load(tmp_path / "mid-epoch.ckpt", weights_only=False)
    assert "combined_loader" not in saved["loops"]["fit_loop"]["state_dict"]
    trainer = L.Trainer(accelerator="cpu", max_steps=5, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(task(), DataLoader(data, batch_size=4), ckpt_path=tmp_path / "mid-epoch.ckpt")  # a plain loader
    assert trainer.global_step == 5
