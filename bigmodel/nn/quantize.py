"""Post-training dynamic int8 quantisation of the linear layers, for inference on CPU.

Weights are stored as int8 with one scale per tensor; activations are quantised per batch on the fly, and the
matrix products run on int8 kernels (fbgemm/x86 or qnnpack). Embeddings, LayerNorm and attention stay float. This
is ``torch.ao.quantization.quantize_dynamic``: torch deprecates ``torch.ao.quantization`` in favour of torchao (not a
dependency here) yet still ships it in 2.14, where it warns on every call; its successor is torchao's
``quantize_(model, Int8DynamicActivationInt8WeightConfig())``.
"""

from __future__ import annotations

import io
import warnings

import torch
from torch import nn

from bigmodel.nn.peft import merge_lora


def quantize_int8(model: nn.Module) -> tuple[nn.Module, int]:
    """``model`` (in place) with LoRA merged and every ``nn.Linear`` replaced by a dynamic int8 one; returns it and
    how many layers were replaced. For inference only: the int8 layers have no gradients."""
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as err:  # removed from a later torch
        raise ValueError(f"quantize: int8 needs torch.ao.quantization.quantize_dynamic, which torch "
                         f"{torch.__version__} no longer has; drop quantize") from err
    merge_lora(model)  # LoRA layers subclass nn.Linear but are not one: fold them in so they get quantised too
    count = sum(type(m) is nn.Linear for m in model.modules())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?s).*torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r"(?s).*quantize_per_tensor.*deprecated")
        model = quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8, inplace=True)
    return model, count


def state_dict_bytes(model: nn.Module) -> int:
    """Size of ``torch.save(model.state_dict())``: what the weights take on disk (int8 layers' packed weights too)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes
