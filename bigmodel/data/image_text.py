"""Images with captions for contrastive image-text training (CLIP-style) and zero-shot classification. Where they
come from (digits with generated captions, a CSV of ``path,caption``, a Hugging Face dataset) is read by
``data/sources/image_text.py``; their batches are made by ``data/image_text_batches.py``.

Evaluation batches come from one loader whose batches are either images or captions, tagged by ``EVAL_KIND``; the
zero-shot prompts are one batch that every rank encodes whole (``zero_shot_prompts``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from datasets import Dataset as HFDataset
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, Dataset

from bigmodel.data.augment import AugmentConfig, sample_transform
from bigmodel.data.base import DataModule
from bigmodel.data.collators import ClassificationCollator
from bigmodel.data.image_text_batches import (EVAL_CAPTIONS, EVAL_IMAGES, EVAL_KIND, CaptionDrawCollator,
                                              CaptionedImages, EvalBatches, EvalBatchSampler, Texts, collate_images)
from bigmodel.data.sources.image_text import DIGIT_CAPTIONS, load_captioned, load_digits
from bigmodel.data.sources.images import IMAGENET_MEAN, IMAGENET_STD, ImageFiles, list_images
from bigmodel.data.tokenizer import cached_wordpiece, check_wordpiece_settings, load_tokenizer

__all__ = ["EVAL_CAPTIONS", "EVAL_IMAGES", "EVAL_KIND", "ImageTextDataModule"]  # tasks and run read the EVAL_ tags

# zero-shot prompts for digits: one phrasing seen in training, the others new (the Chinese one included); the
# class name is the numeral
DIGIT_TEMPLATES = {"en": ["a photo of the digit {}", "a picture of the digit {}", "an image of a handwritten {}",
                          "a handwritten {}"],
                   "zh": ["一张手写数字{}的图片"]}
PHOTO_TEMPLATES = ["a photo of a {}", "a picture of a {}"]
CAPTION_VOCAB_SIZE = 1000  # the default wordpiece_vocab_size of captions (short texts)


class ImageTextDataModule(DataModule):
    """Images with captions for contrastive image-text training (``ImageTextTask``) and zero-shot classification.

    Args:
        dataset: ``digits`` (scikit-learn's 1,797 digits in their fixed 1,257/180/360 split, captions generated
            from the label in several phrasings; offline); a CSV file of ``path,caption`` rows (image paths relative
            to the CSV's folder; several rows per image are several captions; an optional ``split`` column of
            train/validation/test, else validation is held out of train by image and there is no test split
            unless ``test`` rows exist); a Hugging Face hub name (e.g. a Flickr30k or COCO captions set; one row
            per image, its caption a text or a list of texts); or a local directory of ``save_to_disk`` or hub
            format. Splits are train/validation/test as present (a single split with a ``split`` column is
            divided by it); without validation, ``validation_fraction`` of the training images is held out.
        dataset_config: the hub dataset's configuration name.
        image_column: the column of images (hub datasets) or image paths (CSV; ``path`` when the CSV has no
            ``image`` column).
        caption_column: the column of captions: a text, or a list of texts per image (Flickr30k).
        tokenizer: a bigmodel checkpoint (its embedded tokenizer), a tokenizer directory, or a hub name; None
            trains a WordPiece on the training captions (``wordpiece_vocab_size``, ``lowercase``; cached). Its
            normaliser puts every Chinese character in a token of its own.
        max_length: longer captions and prompts are truncated (the number truncated is reported).
        languages: caption languages for digits: ``en`` and/or ``zh`` (Chinese).
        image_size: resize to this side length; default the native 8 for digits, 224 for photos.
        wordpiece_vocab_size: vocabulary size of the WordPiece trained when ``tokenizer`` is None. Another
            size than the default (1000) beside a ``tokenizer`` is an error (the tokenizer has its own vocabulary).
        lowercase: that WordPiece lowercases the captions; ``false`` beside a ``tokenizer`` is an error.
        mean: per-channel normalisation mean; default digits' own statistics, ImageNet's for photos.
        std: per-channel normalisation standard deviation, defaulting as ``mean``.
        crop_padding: training augmentation, a random crop after padding each side by this many pixels (0: off).
        label_names: classes for zero-shot classification (as the text classifier's ``label_names``), each put into every ``zero_shot_templates``; digits
            default ``0``..``9`` (and its images carry ``labels``: fit, validate and test, which score them, need
            ten names; predict takes any, e.g. for one's own images); other sets have none unless given.
        zero_shot_templates: prompts with ``{}`` where the class name goes. Digits default: English phrasings
            mostly unseen in training and one Chinese (when ``zh`` is among ``languages``); photos default
            ``a photo of a {}``, ``a picture of a {}``.
        predict_dir: image file or directory to classify zero-shot with ``bigmodel predict`` (default: the test
            split's images).
        **kwargs: batch size, workers, validation split, seed, cache: see ``DataModule``.

    Batches: training, one per image per epoch with one of its captions: ``pixel_values`` (B, C, H, W),
    ``input_ids``, ``attention_mask`` (only when padded), ``caption_ids`` (B,), ``image_caption_ids`` (B, K; -1
    pads; K is the most captions a training image has) and, for digits, ``labels``. Validation and test: one
    loader of image batches and caption batches, each tagged ``EVAL_KIND``: ``EVAL_IMAGES`` or ``EVAL_CAPTIONS``
    (see there; ``EvalBatchSampler`` says in which order and how ranks share them); predict: the images (files carry
    ``path``). Zero-shot prompts: ``zero_shot_prompts()``, one batch.
    """

    def __init__(
        self,
        dataset: str = "digits",
        dataset_config: str | None = None,
        image_column: str = "image",
        caption_column: str = "caption",
        tokenizer: str | None = None,
        wordpiece_vocab_size: int = CAPTION_VOCAB_SIZE,
        lowercase: bool = True,
        max_length: int = 32,
        languages: list[str] | None = None,
        image_size: int | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        crop_padding: int = 0,
        label_names: list[str] | None = None,
        zero_shot_templates: list[str] | None = None,
        predict_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_wordpiece_settings(tokenizer, wordpiece_vocab_size, lowercase, CAPTION_VOCAB_SIZE)
        self.languages = list(languages) if languages is not None else ["en", "zh"]
        unknown = sorted(set(self.languages) - set(DIGIT_CAPTIONS))
        if unknown or not self.languages:
            raise ValueError(f"languages {self.languages}: digits captions come in {sorted(DIGIT_CAPTIONS)}; "
                             "list one or both")
        if max_length < 3:
            raise ValueError(f"max_length must leave room for a token between [CLS] and [SEP], got {max_length}")
        self.augment = AugmentConfig(crop_padding=crop_padding)
        self.digits = dataset == "digits"
        if self.digits:
            self.splits, (default_mean, default_std) = load_digits(self.languages)
            self.image_size = image_size
        else:
            self.splits = load_captioned(dataset, dataset_config, image_column, caption_column, self.hold_out)
            (default_mean, default_std), self.image_size = (IMAGENET_MEAN, IMAGENET_STD), image_size or 224
        self.mean, self.std = tuple(mean or default_mean), tuple(std or default_std)
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean {list(self.mean)} and std {list(self.std)} need one value per channel each")

        if tokenizer is not None:
            self.tokenizer = load_tokenizer(tokenizer, self.cache_dir)
        else:
            texts = HFDataset.from_dict({"caption": self.splits["train"].captions})
            self.tokenizer = cached_wordpiece(texts, ["caption"], self.cache_dir, wordpiece_vocab_size, lowercase,
                                              model_max_length=max_length)
        self.vocab_size = len(self.tokenizer)

        if label_names is not None and len(label_names) < 2:
            raise ValueError(f"label_names lists {list(label_names)}; zero-shot classification needs two or more")
        self.class_names = list(label_names) if label_names is not None else (
            [str(i) for i in range(10)] if self.digits else None)
        self.num_classes = len(self.class_names) if self.class_names is not None else None
        if zero_shot_templates is None:
            zero_shot_templates = ([t for lang in self.languages for t in DIGIT_TEMPLATES[lang]] if self.digits
                                   else PHOTO_TEMPLATES)
        bad = [t for t in zero_shot_templates if t.count("{}") != 1]
        if bad or not zero_shot_templates:
            raise ValueError(f"zero_shot_templates {bad or '[]'}: each needs exactly one {{}} where the class name "
                             "goes, e.g. 'a photo of a {}'")
        self.zero_shot_templates = list(zero_shot_templates)
        self.datasets: dict[str, Dataset] = {}

    # --- datasets and loaders ----------------------------------------------------------------------------------

    def _encode(self, texts: list[str], what: str) -> list[list[int]]:
        enc = self.tokenizer(texts, truncation=True, max_length=self.hparams.max_length)
        cut = sum(bool(e.overflowing) for e in enc.encodings) if enc.encodings else 0
        if cut:
            rank_zero_warn(f"{cut} of {len(texts)} {what} were longer than max_length={self.hparams.max_length} "
                           "tokens and were truncated")
        return enc["input_ids"]

    def setup(self, stage: str) -> None:
        if self.digits and stage in ("fit", "validate", "test") and self.num_classes != 10:
            # the digits' own labels are scored against the classes then; predict takes any classes (own images)
            stage = getattr(stage, "value", stage)  # Lightning passes a TrainerFn, whose str is its class and name
            raise ValueError(f"digits has 10 classes (0..9) but label_names lists {self.num_classes}: {stage} scores "
                             "the digits' labels, so list ten names in order of 0..9 (other classes: predict only)")
        if self.datasets:
            return
        native = 8 if self.digits else None
        train_tf = sample_transform(self.augment, self.image_size, self.mean, self.std, native)
        eval_tf = sample_transform(None, self.image_size, self.mean, self.std)
        self._train_transform = train_tf  # applied by the training collator, seeded per image and epoch
        self.caption_input_ids = {}
        for name, split in self.splits.items():
            self.datasets[name] = CaptionedImages(split, None if name == "train" else eval_tf)
            self.caption_input_ids[name] = self._encode(split.captions, f"{name} captions")
            self.datasets[f"{name}_captions"] = Texts(self.caption_input_ids[name],
                                                      caption_ids=list(range(len(split.captions))))
        if self.class_names is not None:
            pairs = [(t, c) for t in self.zero_shot_templates for c in range(len(self.class_names))]
            prompts = [t.replace("{}", self.class_names[c]) for t, c in pairs]
            self._prompts = ClassificationCollator(self.tokenizer)(
                [{"input_ids": ids, "prompt_class": c}
                 for ids, (_, c) in zip(self._encode(prompts, "zero-shot prompts"), pairs)])
        if self.hparams.predict_dir:  # files are brought to the training images' size and channels
            files = list_images(Path(self.hparams.predict_dir).expanduser())
            size, mode = (self.image_size or 8, "L") if self.digits else (self.image_size, "RGB")
            self.datasets["predict"] = ImageFiles(files, sample_transform(None, size, self.mean, self.std), mode)
        rank_zero_info("Image-text: " + ", ".join(f"{n} {len(s.images)} images / {len(s.captions)} captions"
                                                  for n, s in self.splits.items())
                       + (f"; {self.num_classes} zero-shot classes x {len(self.zero_shot_templates)} templates"
                          if self.class_names is not None else ""))

    def train_dataloader(self) -> DataLoader:
        train = self.datasets["train"]  # full batches only: a short last batch would recompile a compiled model
        width = max(len(ids) for ids in self.splits["train"].image_captions)
        collate = CaptionDrawCollator(self.tokenizer, self.caption_input_ids["train"], self.hparams.seed, width,
                                      self._train_transform)
        return self.train_loader(train, collate, drop_last=len(train) > self.hparams.batch_size)

    def _eval_loader(self, split: str) -> DataLoader:
        """The split's images and captions in one loader (see ``EvalBatchSampler``)."""
        if split not in self.datasets:
            raise ValueError(f"{self.hparams.dataset!r} has no {split} split: give CSV rows with split {split} or a "
                             f"dataset with a {split} split")
        captions = (self.datasets[f"{split}_captions"], ClassificationCollator(self.tokenizer))
        data = EvalBatches({EVAL_IMAGES: (self.datasets[split], collate_images), EVAL_CAPTIONS: captions})
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        sampler = EvalBatchSampler({kind: len(dataset) for kind, (dataset, _) in data.parts.items()},
                                   self.hparams.batch_size, rank, world)
        return self.loader(data, data.collate, sampler=sampler, batched=False)

    def zero_shot_prompts(self) -> dict[str, torch.Tensor] | None:
        """Every (template, class) prompt as one batch (template-major): ``input_ids``, ``attention_mask`` (when
        padded), ``prompt_class``. A few dozen texts: each rank encodes them all, no gathering. None without
        ``label_names``."""
        if self.class_names is None:
            return None
        if not hasattr(self, "_prompts"):
            self.setup("predict")
        return dict(self._prompts)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("validation")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        if self.class_names is None:
            raise ValueError("zero-shot prediction needs classes: set data.init_args.label_names (their prompts are "
                             "what the images are matched against)")
        images = self.datasets.get("predict", self.datasets.get("test"))
        if images is None:
            raise ValueError("nothing to predict: set data.init_args.predict_dir to an image file or directory")
        return self.loader(images, collate_images)
