"""LightningModules: loss, metrics, optimiser setup and logging. They import ``bigmodel.nn`` and ``bigmodel.data``,
never ``run`` or ``commands`` (tests/test_layers.py).

``Task`` is the base to subclass for a task of your own (optimiser settings, ``init_from``, checkpoint entry, and the
parts bigmodel's tasks compose: fine-tuning modes, int8 inference, the non-finite guard); ``TaskBase`` is the same
without those parts. ``Pretrained`` is what ``init_from`` reads, handed to ``Task.load_pretrained``.
"""

from bigmodel.tasks.base import Task, TaskBase
from bigmodel.tasks.causal_lm import CausalLMTask
from bigmodel.tasks.checkpoints import Pretrained
from bigmodel.tasks.classification import ClassificationTask
from bigmodel.tasks.finetuning import FineTuning, Int8Inference
from bigmodel.tasks.guards import NonFiniteGuard
from bigmodel.tasks.image_text import ImageTextTask
from bigmodel.tasks.mlm import MLMTask
from bigmodel.tasks.prompt import PromptClassificationTask

__all__ = ["CausalLMTask", "ClassificationTask", "FineTuning", "ImageTextTask", "Int8Inference", "MLMTask",
           "NonFiniteGuard", "PromptClassificationTask", "Pretrained", "Task", "TaskBase"]
