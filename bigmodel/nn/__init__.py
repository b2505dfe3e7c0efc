"""Pure PyTorch model code: imports torch only, so it can be copied into another project."""

from bigmodel.nn.config import PRESETS, EncoderConfig
from bigmodel.nn.encoder import Attention, Block, EncoderOutput, TransformerEncoder, num_parameters
from bigmodel.nn.heads import ClassificationHead, MLMHead, Pooler
from bigmodel.nn.models import MaskedLanguageModel, SequenceClassifier
from bigmodel.nn.vision import PatchEmbeddings, VisionTransformer, attention_rollout, resample_position_embeddings

__all__ = [
    "PRESETS",
    "PatchEmbeddings",
    "VisionTransformer",
    "attention_rollout",
    "resample_position_embeddings",
    "Attention",
    "Block",
    "ClassificationHead",
    "EncoderConfig",
    "EncoderOutput",
    "MLMHead",
    "MaskedLanguageModel",
    "Pooler",
    "SequenceClassifier",
    "TransformerEncoder",
    "num_parameters",
]
