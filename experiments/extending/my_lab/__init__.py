"""my_lab: a lab's own pieces on top of bigmodel, chosen by class path in YAML -- bigmodel itself is not edited.

- ``TokenTaggingTask`` (task.py): a tag for every word, on bigmodel's text encoder; ``init_from`` an MLM checkpoint.
- ``CodeSpansDataModule`` (data.py): which words of Python's reference documentation are code (offline).
- ``TokenTagger``, ``ConvMixer``, ``ConvTextEncoder`` (nn.py): plain PyTorch networks; ``ConvMixer`` is an image
  backbone and ``ConvTextEncoder`` a text encoder for bigmodel's own ``ClassificationTask``.
- ``TagSamples`` (callbacks.py): a few sentences tagged by the model after each validation.

Importable with ``PYTHONPATH=experiments/extending``; run by ``experiments/extending/*.yaml`` (their README.md
beside them).
"""

from my_lab.callbacks import TagSamples
from my_lab.data import CodeSpansDataModule
from my_lab.nn import ConvMixer, ConvTextEncoder, TokenTagger
from my_lab.task import TokenTaggingTask

__all__ = ["CodeSpansDataModule", "ConvMixer", "ConvTextEncoder", "TagSamples", "TokenTagger", "TokenTaggingTask"]
