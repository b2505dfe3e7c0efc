"""LightningModules: loss, metrics, optimiser setup and logging. They import ``bigmodel.nn``, never ``data``."""

from bigmodel.tasks.classification import ClassificationTask
from bigmodel.tasks.mlm import MLMTask

__all__ = ["ClassificationTask", "MLMTask"]

from bigmodel.tasks.causal_lm import CausalLMTask  # noqa: E402

__all__ += ["CausalLMTask"]

from bigmodel.tasks.prompt import PromptClassificationTask  # noqa: E402

__all__ += ["PromptClassificationTask"]
