"""``Task`` is ``TaskBase`` plus parts (fine-tuning modes, int8 inference, the non-finite guard); a task on
``TaskBase`` alone has none of their init args or hooks and trains with Lightning's own clipping."""

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from jsonargparse import ArgumentParser
from torch.utils.data import DataLoader

from bigmodel.nn import SmallCNN
from bigmodel.tasks import ClassificationTask, FineTuning, Int8Inference, NonFiniteGuard, Task, TaskBase
from bigmodel.tasks.checkpoints import TASKS

PART_ARGS = {"nonfinite", "finetune", "lora", "checkpoint_weights", "quantize"}


class Plain(TaskBase):
    """Images -> classes on TaskBase alone; ``poison`` makes the loss NaN at those batches."""

    checkpoint_task = "plain_test"

    def __init__(self, poison: tuple[int, ...] = (), **kwargs) -> None:
        super().__init__(**kwargs)
        self.poison = list(poison)
        self.net = SmallCNN(3, image_size=8)

    def training_step(self, batch, batch_idx):
        loss = F.cross_entropy(self.net(batch["pixel_values"]), batch["labels"])
        return loss * float("nan") if batch_idx in self.poison else loss


def fit(task: L.LightningModule, **trainer) -> L.Trainer:
    torch.manual_seed(0)
    data = [{"pixel_values": torch.randn(1, 8, 8), "labels": torch.tensor(i % 3)} for i in range(16)]
    trainer = L.Trainer(accelerator="cpu", max_steps=4, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, **trainer)
    trainer.fit(task, DataLoader(data, batch_size=4))
    return trainer


def cli_args(cls: type) -> set[str]:
    parser = ArgumentParser()
    parser.add_class_arguments(cls, "model")
    return {action.dest.removeprefix("model.") for action in parser._actions if action.dest.startswith("model.")}


def test_task_composes_every_part_and_the_cli_reads_their_args():
    assert Task.__mro__[1:5] == (Int8Inference, FineTuning, NonFiniteGuard, TaskBase)
    assert PART_ARGS <= cli_args(ClassificationTask)
    assert not PART_ARGS & cli_args(Plain)  # a lab's task on TaskBase: none of the parts' settings
    assert {"lr", "schedule", "warmup", "compile", "layer_decay"} <= cli_args(Plain)


def test_a_task_on_taskbase_alone_has_no_part_settings_and_is_found_by_its_checkpoint_name():
    task = Plain(lr=3e-3)
    assert task.hparams["lr"] == 3e-3 and not PART_ARGS & set(task.hparams)
    with pytest.raises(TypeError, match=r"Plain has no part that reads \['finetune'\]: list FineTuning \(bigmodel.tasks\) "
                                        r"before TaskBase in its bases, or drop the setting"):
        Plain(finetune="lora")  # not silently ignored: only a checkpoint's settings are (load_from_checkpoint)
    assert TASKS["plain_test"] is Plain and TASKS["classification"] is ClassificationTask


def test_without_the_guard_lightning_clips_a_foreach_adamw_under_bf16_and_nonfinite_steps_are_not_checked():
    task = Plain(poison=(1,), warmup=0)
    trainer = fit(task, precision="bf16-mixed", gradient_clip_val=0.5)  # Lightning refuses a fused optimizer here
    optimizer = trainer.optimizers[0]
    assert not optimizer.defaults["fused"] and optimizer.defaults["foreach"]
    assert trainer.global_step == 4 and not hasattr(task, "skipped_steps")
    assert not all(torch.isfinite(p).all() for p in task.parameters())  # the NaN step went through: no guard

    guarded = type("Guarded", (NonFiniteGuard, Plain), {})(poison=(1,), warmup=0, nonfinite="skip")
    trainer = fit(guarded, precision="bf16-mixed", gradient_clip_val=0.5)
    assert trainer.optimizers[0].defaults["fused"] and guarded.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in guarded.parameters())


def test_a_parts_bad_setting_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"nonfinite 'ignore': choose stop, skip or off"):
        ClassificationTask(num_classes=3, backbone=lambda n: SmallCNN(n, image_size=8), nonfinite="ignore")
