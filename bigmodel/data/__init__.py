"""LightningDataModules, tokenizers and collators (MLM masking lives here, where batches are made). Where the data
comes from -- hub names, files, image sets, captioned images, built-in offline text -- is read by the readers in
``sources/``, one module per kind (its docstring states what a reader takes and returns).

For a data module of your own: subclass ``DataModule`` (batch size, workers, seed, a resumable training order)
or ``TextDataModule``, and set the attributes the CLI links to the task (``vocab_size``, ``num_classes``,
``class_names``) in ``__init__``; ``load_tokenizer`` and ``cached_wordpiece`` give a tokenizer as the built-in
modules do (``check_wordpiece_settings`` refuses WordPiece settings beside a given tokenizer). See
experiments/extending/README.md.
"""

from bigmodel.data.base import DataModule, TextDataModule
from bigmodel.data.corpus import CorpusDataModule
from bigmodel.data.image_text import ImageTextDataModule
from bigmodel.data.images import ImageDataModule
from bigmodel.data.text_classification import TextClassificationDataModule
from bigmodel.data.tokenizer import cached_wordpiece, check_wordpiece_settings, load_tokenizer

__all__ = ["CorpusDataModule", "DataModule", "ImageDataModule", "ImageTextDataModule", "TextClassificationDataModule",
           "TextDataModule", "cached_wordpiece", "check_wordpiece_settings", "load_tokenizer"]
