"""A callback of one's own, added to a run by class path (``trainer.callbacks`` in YAML)."""

from __future__ import annotations

import os

import lightning as L

from my_lab.task import tagged_text


class TagSamples(L.Callback):
    """After each validation, tags ``texts`` with the model as it is and writes them, one per line, to
    ``<run dir>/tag_samples.txt`` (appended per epoch) and to TensorBoard's text tab: what the metrics average
    over, read as sentences.

    Needs a task with ``tag(batch)`` (``TokenTaggingTask``) and a data module with ``batch(texts)``
    (``CodeSpansDataModule``).

    Args:
        texts: the sentences to tag, as a user would type them (no quotes around code).
        every_n_epochs: how often.
    """

    def __init__(self, texts: list[str], every_n_epochs: int = 1) -> None:
        self.texts = list(texts)
        self.every_n_epochs = every_n_epochs

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.texts or trainer.current_epoch % self.every_n_epochs:
            return
        batch = trainer.datamodule.batch(self.texts)
        batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
        lines = [tagged_text(words, tags) for words, tags in zip(batch["words"], pl_module.tag(batch))]
        log_dir = trainer.log_dir  # a collective call under DDP: every rank makes it
        if not trainer.is_global_zero:
            return
        header = f"epoch {trainer.current_epoch}, step {trainer.global_step}"
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)
            with open(os.path.join(log_dir, "tag_samples.txt"), "a", encoding="utf-8") as f:
                f.write("\n".join([f"# {header}", *lines]) + "\n")
        experiment = getattr(trainer.logger, "experiment", None)
        if hasattr(experiment, "add_text"):
            experiment.add_text("samples/tags", "    " + "\n    ".join(lines), trainer.global_step)
