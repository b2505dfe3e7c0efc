"""``bigmodel predict``'s output: each prediction as a row of a CSV or JSONL file, written once for all DDP ranks
in the order of the inputs."""

from __future__ import annotations

import csv
import glob
import json
import math
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from bigmodel.data.corpus import document_tokens


class PredictionWriter(BasePredictionWriter):
    """Writes ``predict`` results (text, image path or, for a split's images without files, their ``index`` in it;
    label id, class name, class probabilities) to CSV or JSONL;
    for a causal LM, each prompt with its continuations (one column per decoding). A task of another kind has its
    ``predict_step`` return ``{"rows": [{column: value, ...}, ...]}``: each dict is one row, written as it is.

    Under DDP, rank 0 writes every rank's rows as one file in the order of the inputs, each input once (the
    distributed sampler deals the inputs out in turn and repeats a few to even out the ranks): see ``merge_ranks``.

    Args:
        output: file path (``.csv`` or ``.jsonl``); default ``<run dir>/predictions.csv``.
    """

    FORMATS = (".csv", ".jsonl")

    def __init__(self, output: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.output = output

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """A bad output is refused before anything is predicted: an unknown format, or one of the very files being
        labelled (written over with the predictions, the user's input would be lost)."""
        if stage != "predict" or self.output is None:
            return
        output = Path(self.output).expanduser()
        if output.suffix.lower() not in self.FORMATS:
            raise ValueError(f"predictions.output {self.output!r} must end in {' or '.join(self.FORMATS)}: give e.g. "
                             f"{str(output.with_suffix('.csv'))!r}")
        inputs = getattr(trainer.datamodule, "hparams", {}).get("predict_files") or []  # images are no .csv
        inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        files = [f for pattern in inputs for f in glob.glob(os.path.expanduser(pattern))]
        if output.exists() and any(os.path.samefile(output, f) for f in files):
            other = output.with_name(f"{output.stem}.predictions{output.suffix}")
            raise ValueError(f"predictions.output {self.output!r} is one of the files being labelled "
                             f"(data.init_args.predict_files) and would be overwritten; give another file, e.g. "
                             f"{str(other)!r}")

    def write_on_epoch_end(self, trainer, pl_module, predictions: list[Any], batch_indices) -> None:
        path = Path(self.output or os.path.join(trainer.log_dir or ".", "predictions.csv"))  # (a collective)
        batches = [self._rows(batch, trainer, pl_module) for batch in predictions]
        if getattr(trainer, "world_size", 1) > 1:
            indices = batch_indices[0] if batch_indices else []  # one predict loader: its batches' example indices
            rows = merge_ranks(gather_to_rank_zero(list(zip(indices, batches)) if len(indices) == len(batches)
                                                   else [(None, rows) for rows in batches]))
            if not trainer.is_global_zero:
                return
        else:
            rows = [row for rows in batches for row in rows]
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".jsonl":
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        else:
            with open(path, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["text", "label"])
                writer.writeheader()
                writer.writerows(rows)
        rank_zero_info(f"Wrote {len(rows)} predictions to {path}")

    @staticmethod
    def _rows(batch: dict[str, Any], trainer: L.Trainer, pl_module: L.LightningModule) -> list[dict[str, Any]]:
        """One batch's rows: a task's own ``rows``, a causal LM's continuations, or a classifier's predictions."""
        if "rows" in batch:
            return list(batch["rows"])
        if "generated" in batch:  # a causal LM's continuations: decoded here, where the tokenizer is
            return generated_rows(batch, trainer.datamodule.tokenizer)
        names = list(getattr(pl_module, "class_names", None) or [])
        key = next((k for k in ("path", "text", "index") if batch.get(k) is not None), "text")
        inputs = batch.get(key)
        inputs = [None] * len(batch["pred"]) if inputs is None else \
            inputs.tolist() if isinstance(inputs, torch.Tensor) else inputs
        rows = []
        for item, pred, probs in zip(inputs, batch["pred"].tolist(), batch["probs"].tolist()):
            row = {key: item, "label": pred, "class_name": names[pred] if names else str(pred)}
            row.update({f"prob_{names[i] if names else i}": round(p, 6) for i, p in enumerate(probs)})
            rows.append(row)
        return rows


def gather_to_rank_zero(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` (picklable), in rank order, on rank 0; None on the others."""
    import torch.distributed as dist

    gathered = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def merge_ranks(ranks: list[list[tuple[list[int] | None, list[dict[str, Any]]]]] | None) -> list[dict[str, Any]]:
    """Each rank's batches as ``(the dataset indices of its examples, its rows)``, merged into the rows of the
    inputs in order, each once: a batch of one row per example gives each row its example's index, and the copies
    that the distributed sampler adds to even out the ranks are left out. A batch of another number of rows (a
    task's own ``rows``), or without indices, is kept whole at its first example's place."""
    entries: list[tuple[float, int, list[dict[str, Any]]]] = []  # (place, order seen, rows)
    seen: set[int] = set()
    for batches in ranks or []:
        for indices, rows in batches:
            if indices is not None and len(indices) == len(rows):
                for index, row in zip(indices, rows):
                    if index not in seen:
                        seen.add(index)
                        entries.append((index, len(entries), [row]))
            else:
                entries.append((min(indices) if indices else math.inf, len(entries), rows))
    return [row for *_, rows in sorted(entries, key=lambda entry: entry[:2]) for row in rows]


def generated_rows(batch: dict[str, Any], tokenizer) -> list[dict[str, str]]:
    """Prompt text, then prompt + continuation decoded per decoding; a generated end of document ([SEP], or a GPT
    tokenizer's EOS, which may also be its BOS and begin the prompt) ends it."""
    end = document_tokens(tokenizer)[1]
    rows = []
    for i, text in enumerate(batch["text"]):
        row = {"text": text}
        prompt = batch.get("prompt_length", [0] * len(batch["text"]))[i]
        for name, sequences in batch["generated"].items():
            ids = sequences[i]
            if end in ids[prompt:]:
                ids = ids[: ids.index(end, prompt)]
            row[name] = tokenizer.decode(ids, skip_special_tokens=True)
        rows.append(row)
    return rows
