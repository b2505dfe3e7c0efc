"""Pure PyTorch model code: imports torch (and torchvision for ResNet) only, so it can be copied into another project."""

from bigmodel.nn.cnn import ResNet18, SmallCNN
from bigmodel.nn.config import PRESETS, EncoderConfig
from bigmodel.nn.encoder import Attention, Block, EncoderOutput, TransformerEncoder, init_weights, num_parameters
from bigmodel.nn.heads import ClassificationHead, MLMHead, Pooler, TransformPooler
from bigmodel.nn.models import MaskedLanguageModel, SequenceClassifier
from bigmodel.nn.vision import PatchEmbeddings, VisionTransformer, attention_rollout, resample_position_embeddings

__all__ = [
    "PRESETS",
    "PatchEmbeddings",
    "ResNet18",
    "SmallCNN",
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
    "TransformPooler",
    "SequenceClassifier",
    "TransformerEncoder",
    "init_weights",
    "num_parameters",
]

from bigmodel.nn.models import CausalLanguageModel  # noqa: E402

__all__ += ["CausalLanguageModel"]
