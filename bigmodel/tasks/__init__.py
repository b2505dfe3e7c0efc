"""LightningModules: loss, metrics, optimiser setup and logging. They import ``bigmodel.nn``, never ``data``.

``Task`` is the base to subclass for a task of your own (optimiser settings, ``init_from``, checkpoint entry);
``Pretrained`` is what ``init_from`` reads, handed to ``Task.load_pretrained``.
"""

from bigmodel.tasks.base import Task
from bigmodel.tasks.checkpoints import Pretrained
from bigmodel.tasks.classification import ClassificationTask
from bigmodel.tasks.mlm import MLMTask

__all__ = ["ClassificationTask", "MLMTask", "Pretrained", "Task"]

from bigmodel.tasks.causal_lm import CausalLMTask  # noqa: E402

__all__ += ["CausalLMTask"]

from bigmodel.tasks.prompt import PromptClassificationTask  # noqa: E402

__all__ += ["PromptClassificationTask"]

from bigmodel.tasks.image_text import ImageTextTask  # noqa: E402

__all__ += ["ImageTextTask"]
