"""The teacher of knowledge distillation (``ClassificationTask``'s ``distill_from``): a trained classifier, checked
against its student before it is used; apart from the task, which it reaches by checkpoint name
(``checkpoints.TASKS``), so the task module holds the task."""

from __future__ import annotations

import os

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from bigmodel.nn import EncoderConfig
from bigmodel.tasks.base import TaskBase, check_data_length
from bigmodel.tasks.checkpoints import META_KEY, TASKS
from bigmodel.utils.formatting import count


def load_teacher(path: str, student: TaskBase) -> L.LightningModule:
    """A trained classifier of the student's classes (and, for text, with positions for the data's longest
    sequence), in eval mode, without gradients."""
    if getattr(student, "checkpoint_task", None) == "prompt":  # its batches are templates around each text
        raise ValueError("distill_from with a prompt (PET) student: the teacher would read the student's filled "
                         "templates, not the plain texts it was trained on; distil into a classification student "
                         "(model.class_path bigmodel.tasks.ClassificationTask), or drop distill_from")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"distill_from {path!r} does not exist; point it to the teacher's .ckpt")
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    meta = ckpt.get(META_KEY) or {}
    if meta.get("task") == "prompt":  # its forward needs the template's mask position; the student's texts have none
        template = (ckpt.get("datamodule_hyper_parameters") or {}).get("template")
        raise ValueError(f"distill_from {path!r} is a prompt (PET) checkpoint: it scores the mask of its template"
                         f"{f' {template!r}' if template else ''}, which the student's data (plain texts) does not "
                         "build; distil from a classification checkpoint (e.g. one fine-tuned from the same MLM)")
    if meta.get("task") != "classification":
        raise ValueError(f"distill_from {path!r} is a {meta.get('task', 'non-bigmodel')!r} checkpoint; the teacher "
                         "must be a classification checkpoint of this project")
    if list(meta.get("class_names") or []) != list(student.class_names):
        raise ValueError(f"distill_from {path!r} has the classes {meta.get('class_names')}, the student "
                         f"{student.class_names}: a teacher must have the same classes in the same order")
    teacher = TASKS["classification"].load_from_checkpoint(path, map_location="cpu", init_from=None, distill_from=None)
    text, vocab = (teacher.reads_text, student.reads_text), teacher.hparams.get("vocab_size")
    if text[0] != text[1] or (all(text) and vocab != student.hparams.get("vocab_size")):
        raise ValueError(f"distill_from {path!r} reads {'text' if text[0] else 'images'}"
                         f"{f' with {vocab} tokens' if text[0] else ''}; the student must read the "
                         "same inputs (for text, the same tokenizer)")
    if isinstance(teacher.config, EncoderConfig):  # the student's own length is checked by its setup
        check_data_length(teacher.config, student.data_hparams(), "the teacher's", source=f"distill_from {path!r}: ",
                          more=", or distil from a teacher with more positions")
    rank_zero_info(f"Distilling from {path} ({type(teacher.net).__name__}, "
                   f"{count(sum(p.numel() for p in teacher.parameters()))} parameters, eval mode)")
    return teacher.eval().requires_grad_(False)
