"""Causal language modelling: the shared encoder with a causal mask learns to predict the next token."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn

from bigmodel.data.corpus import document_tokens
from bigmodel.nn import CausalLanguageModel
from bigmodel.nn.embeddings import max_sequence_length
from bigmodel.tasks.language_model import LanguageModelTask
from bigmodel.utils.seeding import mix_seed
from bigmodel.tasks.checkpoints import META_KEY, Pretrained


class CausalLMTask(LanguageModelTask):
    """Args:
        encoder: preset name (``bert-tiny`` ...); ``causal`` is set to true whatever the preset says.
        encoder_config: overrides of the preset's fields, e.g. ``{norm_first: true}`` (GPT-2's pre-LN).
        vocab_size: linked from the data module's tokenizer; never set by hand.
        init_from: start from another checkpoint's encoder (this project's causal LM or MLM, a Hugging Face
            BERT/RoBERTa): its weights, now read causally; the next-token decoder is the word embeddings.
        max_new_tokens, temperature, top_k: what ``bigmodel predict`` generates after each prompt: a greedy
            continuation and one sampled from softmax(logits / ``temperature``) (> 0) restricted to the ``top_k``
            most likely tokens (all of them when 0 or null, as in transformers). Each stops early at its first
            end of document (the tokenizer's [SEP] or EOS), where the written continuation is cut.
        **kwargs: optimiser settings, see ``Task``.
    The data module must give whole blocks: ``CorpusDataModule`` with ``objective: causal``. Its ``block_size`` is
    recorded in the checkpoint (``checkpoint["bigmodel"]["block_size"]``): generation conditions on at most the
    ``block_size - 1`` tokens the model was trained to read (see ``generation_context``).
    """

    checkpoint_task = "causal_lm"  # checkpoint["bigmodel"]["task"]: the CLI checks a --ckpt_path against it

    def __init__(
        self,
        encoder: str = "bert-tiny",
        encoder_config: dict[str, Any] | None = None,
        vocab_size: int | None = None,
        init_from: str | None = None,
        max_new_tokens: int = 40,
        temperature: float = 1.0,
        top_k: int | None = 40,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if temperature <= 0:  # checked now, not at the end of a predict run
            raise ValueError(f"temperature {temperature}: set model.init_args.temperature > 0 (1.0 samples the "
                             "model's own distribution; the greedy continuation is always written too)")
        if top_k is not None and top_k < 0:
            raise ValueError(f"top_k {top_k}: set model.init_args.top_k >= 1, or 0 or null to sample from all tokens")
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens {max_new_tokens}: set model.init_args.max_new_tokens >= 0")
        if vocab_size is None:
            raise ValueError("vocab_size is unset: it comes from the data module's tokenizer through the CLI link")
        overrides = dict(encoder_config or {})
        if overrides.get("causal", True) is not True:
            raise ValueError("CausalLMTask trains a causal encoder: remove causal: false from encoder_config")
        self.config = self.encoder_config_for(encoder, {k: v for k, v in overrides.items() if k != "causal"},
                                              vocab_size, init_from, causal=True)
        self.net = CausalLanguageModel(self.config)
        # How to decode is not how it was trained: kept out of the checkpoint's hyper-parameters, which Lightning's
        # CLI lets override the command line, so `bigmodel predict --model.init_args.top_k 5` takes effect.
        self.generation = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_k": top_k}
        for key in self.generation:
            self.hparams.pop(key)
        self.trained_block_size: int | None = None  # the data's block_size at fit: the positions that trained
        self._crop_said = False
        self._init_metrics()

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit":
            hparams = getattr(getattr(self._trainer, "datamodule", None), "hparams", {})
            self.trained_block_size = hparams.get("block_size") or self.trained_block_size

    def checkpoint_meta(self) -> dict[str, Any]:
        meta = super().checkpoint_meta()
        if self.trained_block_size:
            meta["block_size"] = self.trained_block_size
        return meta

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The checkpoint's block_size; a resumed fit has trained the positions of both its own and this one."""
        saved = (checkpoint.get(META_KEY) or {}).get("block_size")
        fitting = self._trainer is not None and self.trainer.state.fn == "fit"
        now = self.trained_block_size if fitting else None
        self.trained_block_size = max((n for n in (saved, now) if n), default=None)
        super().on_load_checkpoint(checkpoint)

    def generation_context(self) -> tuple[int, str]:
        """How many tokens generation conditions on, and why. Training read ``block_size - 1`` tokens (the last
        token of a block is only a target), so the position rows past them never trained: a longer context would
        run on rows only weight decay moved. A checkpoint written before block_size was recorded falls back to its
        tokenizer's ``model_max_length`` (a trained WordPiece's is the block_size) when the encoder has that many
        positions, else to all the positions."""
        positions = max_sequence_length(self.config)
        if self.trained_block_size:
            return min(positions, self.trained_block_size - 1), f"block_size {self.trained_block_size} at fit"
        tokenizer = getattr(getattr(self._trainer, "datamodule", None), "tokenizer", None)
        length = getattr(tokenizer, "model_max_length", None)
        if isinstance(length, int) and 2 <= length <= positions:
            return length - 1, (f"the tokenizer's model_max_length {length}; the checkpoint predates recording "
                                "block_size")
        return positions, "the encoder's positions; the checkpoint predates recording block_size"

    def end_of_document(self) -> int | None:
        """The data module's tokenizer's end of a document ([SEP], or a GPT tokenizer's EOS): the writer cuts each
        continuation there, so generation stops once it is made. None without a tokenizer (all steps run)."""
        tokenizer = getattr(getattr(self._trainer, "datamodule", None), "tokenizer", None)
        return None if tokenizer is None else document_tokens(tokenizer)[1]

    def on_predict_start(self) -> None:
        self._crop_said = False

    def _say_crop(self, length: int, context: int, why: str) -> None:
        """Once per run: a prompt longer than the trained context loses its beginning."""
        if not self._crop_said:
            self._crop_said = True
            rank_zero_warn(f"a prompt of {length} tokens is longer than the {context} the model was trained to read "
                           f"({why}): it and any other prompt that long are cropped to their last {context} tokens "
                           "as context")

    def load_pretrained(self, pretrained: Pretrained) -> list[str]:
        notes = self.load_encoder(self.net.encoder, pretrained)
        if pretrained.config is not None and not pretrained.config.causal:
            notes.append("a bidirectional encoder, now trained with the causal mask")
        return notes

    def _ignore_examples_from(self, batch: dict[str, torch.Tensor], own: int) -> dict[str, torch.Tensor]:
        labels = batch["labels"].clone()
        labels[own:] = -100
        return {**batch, "labels": labels}

    def _step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if "labels" not in batch:
            raise ValueError("CausalLMTask needs whole blocks as labels but got masked-LM batches: "
                             "set data.init_args.objective: causal")
        # x = tokens 0..S-2 predict y = tokens 1..S-1 (nanoGPT's shift): the last position would have no target
        mask = batch.get("attention_mask")
        logits = self.net(batch["input_ids"][:, :-1], mask[:, :-1] if mask is not None else None)
        labels = batch["labels"][:, 1:]
        count = (labels != -100).sum()
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100, reduction="sum")
        return loss / count.clamp(min=1), logits.flatten(0, 1), labels.flatten(), count

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Continues each prompt twice, greedily and by top-k sampling, each until its end of document or
        ``max_new_tokens``; token ids out, the writer decodes them (and cuts them at that end).

        Prompts differ in length and are generated one by one (no padding to get right); each draw has its own
        generator seeded by (seed, rank, batch, row), so a sample does not depend on the batch size or device order."""
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        context, why = self.generation_context()
        end = self.end_of_document()
        greedy, sampled = [], []
        for row, ids in enumerate(batch["prompt_ids"]):
            prompt = ids[None]
            if prompt.shape[1] > context:
                self._say_crop(prompt.shape[1], context, why)
            greedy.append(self.net.generate(prompt, self.generation["max_new_tokens"], greedy=True,
                                            max_context=context, eos_token_id=end)[0].tolist())
            generator = torch.Generator(self.device).manual_seed(mix_seed(seed, self.global_rank, batch_idx, row))
            sampled.append(self.net.generate(prompt, **self.generation, generator=generator,
                                             max_context=context, eos_token_id=end)[0].tolist())
        return {"text": batch["text"], "generated": {"greedy": greedy, "sampled": sampled},
                "prompt_length": [len(ids) for ids in batch["prompt_ids"]]}  # an end token counts only after it
