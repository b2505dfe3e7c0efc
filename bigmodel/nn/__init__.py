"""Pure PyTorch model code: imports torch (and torchvision for ResNet) only, so it can be copied into another project.

attention (masks, rotary positions, unpadding, Attention) < encoder (blocks, TransformerEncoder) < text and vision
(whole networks) and image_text (two towers); convert holds weights from elsewhere (Hugging Face names, load_matching).
"""

from bigmodel.nn.attention import Attention
from bigmodel.nn.cnn import ResNet18, SmallCNN
from bigmodel.nn.config import PRESETS, EncoderConfig
from bigmodel.nn.encoder import Block, EncoderOutput, TransformerEncoder, init_weights, num_parameters
from bigmodel.nn.heads import ClassificationHead, MLMHead, Pooler, TransformPooler
from bigmodel.nn.text import CausalLanguageModel, MaskedLanguageModel, SequenceClassifier
from bigmodel.nn.vision import PatchEmbeddings, VisionTransformer, attention_rollout, resample_position_embeddings

__all__ = [
    "PRESETS",
    "Attention",
    "Block",
    "CausalLanguageModel",
    "ClassificationHead",
    "EncoderConfig",
    "EncoderOutput",
    "MLMHead",
    "MaskedLanguageModel",
    "PatchEmbeddings",
    "Pooler",
    "ResNet18",
    "SequenceClassifier",
    "SmallCNN",
    "TransformPooler",
    "TransformerEncoder",
    "VisionTransformer",
    "attention_rollout",
    "init_weights",
    "num_parameters",
    "resample_position_embeddings",
]
