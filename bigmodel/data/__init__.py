"""LightningDataModules, tokenizers and collators (MLM masking lives here, where batches are made)."""

from bigmodel.data.corpus import CorpusDataModule
from bigmodel.data.images import ImageDataModule
from bigmodel.data.text_classification import TextClassificationDataModule

__all__ = ["CorpusDataModule", "ImageDataModule", "TextClassificationDataModule"]
