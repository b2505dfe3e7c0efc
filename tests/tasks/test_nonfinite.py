"""Under 16-mixed the GradScaler owns overflows: a routine overflow skips one step and the run goes on; a loss scale
that collapses (every step overflows) stops it. On CPU, with a real fp16 autocast and torch's GradScaler."""

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from torch.utils.data import DataLoader

from bigmodel.nn import SmallCNN
from bigmodel.tasks import ClassificationTask


def cnn(num_classes: int) -> SmallCNN:
    return SmallCNN(num_classes, image_size=8)


class Overflowing(ClassificationTask):
    """Its loss is inf at the batches listed in ``overflow`` (all batches when None)."""

    def __init__(self, overflow: list[int] | None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.overflow = overflow

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("inf") if self.overflow is None or batch_idx in self.overflow else loss


def fit(task: ClassificationTask, init_scale: float, steps: int = 6) -> tuple[L.Trainer, torch.amp.GradScaler]:
    torch.manual_seed(0)
    data = [{"pixel_values": torch.randn(1, 8, 8), "labels": torch.tensor(i % 3)} for i in range(4 * steps)]
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    trainer.fit(task, DataLoader(data, batch_size=4))
    return trainer, scaler


def test_a_gradient_scaler_overflow_is_skipped_by_the_scaler_not_stopped():
    task = Overflowing([1], num_classes=3, backbone=cnn)  # nonfinite: stop, the default
    trainer, scaler = fit(task, init_scale=2.0**16)
    assert trainer.global_step == 6 and task.skipped_steps == 0  # not counted as bigmodel's skip
    assert scaler.get_scale() == 2.0**15  # the scaler saw the overflow once and halved its scale
    assert all(torch.isfinite(p).all() for p in task.parameters())


def test_a_collapsing_loss_scale_stops_the_run():
    task = Overflowing(None, num_classes=3, backbone=cnn)
    with pytest.raises(FloatingPointError, match=r"the 16-mixed loss scale fell to 3\.05e-05 by step 2 .*every step"):
        fit(task, init_scale=2.0**-13)
