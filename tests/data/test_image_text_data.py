"""Image-text data: digits with generated captions (English and Chinese), a CSV of path,caption and a saved
Hugging Face dataset; captions drawn per (seed, epoch, index); the evaluation loaders' order and contents."""

import csv

import pytest
import torch
from lightning.pytorch.trainer.states import TrainerFn
from PIL import Image

from bigmodel.data import ImageTextDataModule
from bigmodel.data.image_text import EVAL_CAPTIONS, EVAL_IMAGES, EVAL_KIND
from bigmodel.data.image_text_batches import EvalBatchSampler
from bigmodel.data.sources.image_text import digit_captions
from bigmodel.utils.hub import HubUnavailableError


@pytest.fixture(scope="module")
def digits():
    dm = ImageTextDataModule(batch_size=64, seed=3)
    dm.setup("fit")
    return dm


def caption_draws(dm, epoch, state=None):
    """{training image index: drawn caption id} over one epoch (from the batch where a resumed run starts)."""
    if state is not None:
        dm.load_state_dict(state)
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    collate, indices = loader.collate_fn, []
    loader.collate_fn = lambda items: indices.append([it["index"] for it in items]) or collate(items)
    draws = {}
    for batch, rows in zip(loader, indices):
        for row, i in enumerate(rows):
            caption = int(batch["caption_ids"][row])
            assert caption in batch["image_caption_ids"][row].tolist()  # a caption of this very image
            draws[i] = caption
    return draws


def test_digits_keep_the_fixed_split_by_image(digits):
    sizes = {name: len(s.images) for name, s in digits.splits.items()}
    assert sizes == {"train": 1257, "validation": 180, "test": 360}
    contents = [{s.images[i].numpy().tobytes() for i in range(len(s.images))} for s in digits.splits.values()]
    assert [len(c) for c in contents] == [1257, 180, 360]  # every digits image differs from the others
    assert not (contents[0] & contents[1] or contents[0] & contents[2] or contents[1] & contents[2])
    assert digits.class_names == [str(i) for i in range(10)] and digits.num_classes == 10
    assert digits.vocab_size == len(digits.tokenizer)


def test_training_draws_one_caption_of_the_image_from_seed_epoch_and_index(digits):
    first = caption_draws(digits, epoch=0)
    assert len(first) == 1257 // 64 * 64  # one caption per image, full batches only
    train = digits.splits["train"]
    for i, caption in first.items():
        assert train.captions[caption] in digit_captions(train.labels[i], ["en", "zh"])
    again = ImageTextDataModule(batch_size=64, seed=3)
    again.setup("fit")
    assert caption_draws(again, epoch=0) == first  # a function of (seed, epoch, index), not of the process
    second = caption_draws(digits, epoch=1)
    common = first.keys() & second.keys()
    assert sum(first[i] != second[i] for i in common) > 0.8 * len(common)  # a new draw every epoch


def test_a_resumed_epoch_draws_the_captions_of_an_unbroken_one(digits):
    unbroken = caption_draws(digits, epoch=0)
    resumed = ImageTextDataModule(batch_size=64, seed=3)
    resumed.setup("fit")
    draws = caption_draws(resumed, epoch=0, state={"epoch": 0, "consumed_batches": 5})
    assert len(draws) == (1257 // 64 - 5) * 64 and all(unbroken[i] == c for i, c in draws.items())


def test_training_batch_keys_shapes_and_types(digits):
    batch = next(iter(digits.train_dataloader()))
    assert set(batch) <= {"pixel_values", "input_ids", "attention_mask", "caption_ids", "image_caption_ids", "labels"}
    assert batch["pixel_values"].shape == (64, 1, 8, 8) and batch["pixel_values"].dtype == torch.float32
    assert batch["input_ids"].dtype == torch.long and batch["input_ids"].shape[0] == 64
    assert batch["caption_ids"].shape == (64,) and batch["labels"].shape == (64,)
    assert batch["image_caption_ids"].shape == (64, 12) and batch["image_caption_ids"].dtype == torch.long


def eval_batches(loader) -> dict[str, list[dict]]:
    """An evaluation loader's batches by their kind (every batch tagged with one)."""
    out = {EVAL_IMAGES: [], EVAL_CAPTIONS: []}
    for batch in loader:
        out[batch.pop(EVAL_KIND)].append(batch)
    return out


def test_one_evaluation_loader_of_tagged_image_and_caption_batches_with_class_level_relevance(digits):
    loader = digits.val_dataloader()
    kinds = [b[EVAL_KIND] for b in loader]  # 180 images and 120 captions in batches of 64, taking turns
    assert kinds == [EVAL_IMAGES, EVAL_CAPTIONS, EVAL_IMAGES, EVAL_CAPTIONS, EVAL_IMAGES] and len(loader) == 5
    batches = eval_batches(loader)
    images = batches[EVAL_IMAGES]
    assert set(images[0]) == {"pixel_values", "image_index", "image_caption_ids", "labels"}
    index = torch.cat([b["image_index"] for b in images])
    assert torch.equal(index, torch.arange(180))
    labels = torch.cat([b["labels"] for b in images])
    relevant = torch.cat([b["image_caption_ids"] for b in images])
    same_class = labels[:, None] == labels[None, :]
    same_captions = (relevant[:, None, :] == relevant[None, :, :]).all(-1)
    assert torch.equal(same_class, same_captions)  # digits: every caption of a class describes all its images
    captions = batches[EVAL_CAPTIONS]
    assert set(captions[0]) <= {"input_ids", "attention_mask", "caption_ids"}
    assert torch.equal(torch.cat([b["caption_ids"] for b in captions]), torch.arange(120))  # 10 x (8 en + 4 zh)
    prompts = digits.zero_shot_prompts()
    assert set(prompts) <= {"input_ids", "attention_mask", "prompt_class"}
    assert torch.equal(prompts["prompt_class"], torch.arange(10).repeat(len(digits.zero_shot_templates)))
    assert any("{}" in t and "digit" in t and all(t.format(d) not in digit_captions(d, ["en"]) for d in range(10))
               for t in digits.zero_shot_templates)  # phrasings that training never showed
    test = eval_batches(digits.test_dataloader())
    assert sum(len(b["image_index"]) for b in test[EVAL_IMAGES]) == 360


@pytest.mark.parametrize("world_size", [1, 3, 7])
def test_evaluation_batches_share_each_kind_among_ranks_as_distributed_samplers_of_their_own(world_size):
    from torch.utils.data import DistributedSampler

    sizes, batch_size = {EVAL_IMAGES: 180, EVAL_CAPTIONS: 5}, 16  # 5 captions for 7 ranks: each pads
    counts = set()
    for rank in range(world_size):
        sampler = EvalBatchSampler(sizes, batch_size, rank, world_size)
        batches = list(sampler)
        assert len(batches) == len(sampler) and all(0 < len(ids) <= batch_size for _, ids in batches)
        for kind, size in sizes.items():
            mine = [i for k, ids in batches if k == kind for i in ids]
            # what Lightning gives each rank of a loader of its own
            assert mine == list(DistributedSampler(range(size), world_size, rank, shuffle=False)), (kind, rank)
        counts.add(tuple(sum(k == kind for k, _ in batches) for kind in sizes))
    assert len(counts) == 1  # every rank as many batches of each kind


def test_predict_matches_prompts_against_test_images_or_files(digits, tmp_path):
    images = digits.predict_dataloader()
    assert len(images.dataset) == 360
    for i in range(3):
        Image.new("RGB", (30, 30), color=(10 * i, 200, 0)).save(tmp_path / f"{i}.png")
    files = ImageTextDataModule(batch_size=2, predict_dir=str(tmp_path))
    files.setup("predict")
    batch = next(iter(files.predict_dataloader()))
    assert batch["pixel_values"].shape == (2, 1, 8, 8) and batch["path"][1].endswith("1.png")


def test_chinese_captions_tokenise_to_known_characters_and_english_only_has_none(digits):
    tok = digits.tokenizer
    chinese = [c for c in digits.splits["train"].captions if "数" in c or "写" in c]
    assert len(chinese) == 40
    for text in chinese + digits.zero_shot_templates:
        tokens = tok.tokenize(text.replace("{}", "7"))
        assert tok.unk_token not in tokens, text
    assert tok.tokenize("手写的数字3") == ["手", "写", "的", "数", "字", "3"]  # one token per CJK character
    english = ImageTextDataModule(languages=["en"], batch_size=8)
    texts = english.splits["train"].captions + english.zero_shot_templates
    assert len(english.splits["train"].captions) == 80 and not any(ord(ch) > 127 for t in texts for ch in t)
    with pytest.raises(ValueError, match="digits captions come in"):
        ImageTextDataModule(languages=["fr"])


def write_captions(root, rows, header=("path", "caption")):
    with open(root / "captions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(root / "captions.csv")


def make_images(root, n=6, size=20):
    (root / "img").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (size, size + i), color=(30 * i, 100, 200)).save(root / "img" / f"{i}.png")
    return [f"img/{i}.png" for i in range(n)]


def test_csv_of_paths_and_captions_holds_validation_out_by_image(tmp_path):
    files = make_images(tmp_path)
    rows = [(f, f"a {kind} picture number {i}") for i, f in enumerate(files) for kind in ("blue", "square")]
    dm = ImageTextDataModule(dataset=write_captions(tmp_path, rows), image_size=16, batch_size=2,
                             validation_fraction=0.34, wordpiece_vocab_size=200)
    assert dm.class_names is None and dm.num_classes is None
    train, val = dm.splits["train"], dm.splits["validation"]
    assert len(train.images) == 4 and len(val.images) == 2 and "test" not in dm.splits
    assert not set(train.images.paths) & set(val.images.paths)
    assert len(train.captions) == 8 and all(len(ids) == 2 for ids in train.image_captions)
    for i, path in enumerate(val.images.paths):  # an image's own two captions are its relevant set
        number = path.rsplit("/", 1)[1].removesuffix(".png")
        assert {val.captions[c] for c in val.image_captions[i]} == {f"a blue picture number {number}",
                                                                     f"a square picture number {number}"}
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixel_values"].shape == (2, 3, 16, 16) and "labels" not in batch
    assert batch["image_caption_ids"].shape == (2, 2)
    batches = eval_batches(dm.val_dataloader())
    # the 2 held-out images and their 4 captions, in batches of 2
    assert [len(b["image_index"]) for b in batches[EVAL_IMAGES]] == [2]
    assert [b["caption_ids"].tolist() for b in batches[EVAL_CAPTIONS]] == [[0, 1], [2, 3]]
    assert dm.zero_shot_prompts() is None  # no classes: no zero-shot prompts
    with pytest.raises(ValueError, match="has no test split"):
        dm.test_dataloader()
    with pytest.raises(ValueError, match="label_names"):
        dm.predict_dataloader()


def test_csv_split_column_and_errors(tmp_path):
    files = make_images(tmp_path, n=4)
    split = ["train", "train", "val", "test"]
    rows = [(f, f"picture {i} {word}", split[i]) for i, f in enumerate(files) for word in ("one", "two")]
    dm = ImageTextDataModule(dataset=write_captions(tmp_path, rows, ("path", "caption", "split")), image_size=8,
                             label_names=["red", "blue"], batch_size=4)
    assert {k: len(s.images) for k, s in dm.splits.items()} == {"train": 2, "validation": 1, "test": 1}
    dm.setup("test")
    assert [b[EVAL_KIND] for b in dm.test_dataloader()] == [EVAL_IMAGES, EVAL_CAPTIONS]
    assert dm.zero_shot_templates == ["a photo of a {}", "a picture of a {}"]
    missing = write_captions(tmp_path, [("img/0.png", "fine"), ("img/nowhere.png", "lost")])
    with pytest.raises(FileNotFoundError, match=r"image 'img/nowhere.png' \(line 3 .*\) does not exist"):
        ImageTextDataModule(dataset=missing)
    wrong = write_captions(tmp_path, [("img/0.png", "fine")], header=("path", "text"))
    with pytest.raises(ValueError, match=r"caption column 'caption' not found .* columns are \['path', 'text'\]"):
        ImageTextDataModule(dataset=wrong)
    empty = write_captions(tmp_path, [("img/0.png", "fine"), ("img/1.png", " ")])
    with pytest.raises(ValueError, match="line 3 .* has an empty caption"):
        ImageTextDataModule(dataset=empty)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageTextDataModule(dataset=str(tmp_path / "none.csv"))
    quoted = tmp_path / "quoted.csv"  # a caption over two lines: the rows below it were numbered one line early
    quoted.write_text('path,caption\nimg/0.png,"a picture\nover two lines"\nimg/nowhere.png,lost\n')
    with pytest.raises(FileNotFoundError, match=r"image 'img/nowhere.png' \(line 4 of"):
        ImageTextDataModule(dataset=str(quoted))
    comma = tmp_path / "comma.csv"  # the caption was cut to "a dog" without a word
    comma.write_text("path,caption\nimg/0.png,fine\nimg/1.png,a dog, running\n")
    with pytest.raises(ValueError, match=r"^line 3 of CSV file '.*comma.csv' has 3 fields where 2 are expected; a "
                                         r"caption that contains a comma must be in double quotes"):
        ImageTextDataModule(dataset=str(comma))


def test_saved_hugging_face_dataset_with_caption_lists(tmp_path):
    from datasets import Dataset, DatasetDict

    def split(n, offset):
        images = [Image.new("RGB", (12, 10), color=(20 * (i + offset), 0, 0)) for i in range(n)]
        captions = [[f"red square {i + offset}", f"a dark red block {i + offset}", "a red thing"] for i in range(n)]
        return Dataset.from_dict({"image": images, "sentences": captions})

    DatasetDict({"train": split(8, 0), "test": split(3, 100)}).save_to_disk(str(tmp_path / "flickr"))
    dm = ImageTextDataModule(dataset=str(tmp_path / "flickr"), caption_column="sentences", image_size=8,
                             batch_size=4, validation_fraction=0.25, label_names=["red", "green"])
    assert {k: len(s.images) for k, s in dm.splits.items()} == {"train": 6, "validation": 2, "test": 3}
    test = dm.splits["test"]
    shared = test.captions.index("a red thing")  # one text on every image: one id, relevant to all of them
    assert len(test.captions) == 7 and all(shared in ids and len(ids) == 3 for ids in test.image_captions)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixel_values"].shape == (4, 3, 8, 8) and batch["image_caption_ids"].shape == (4, 3)
    batches = eval_batches(dm.val_dataloader())
    (images,) = batches[EVAL_IMAGES]
    assert images["pixel_values"].shape == (2, 3, 8, 8)
    assert torch.equal(torch.cat([b["caption_ids"] for b in batches[EVAL_CAPTIONS]]), torch.arange(5))
    assert len(dm.zero_shot_prompts()["prompt_class"]) == 4
    with pytest.raises(ValueError, match=r"caption column 'caption' not found .* columns are \['image', 'sentences'\]"):
        ImageTextDataModule(dataset=str(tmp_path / "flickr"))


def test_hub_name_without_network_or_cache_is_one_clear_error(monkeypatch):
    from bigmodel.utils import hub
    from bigmodel.data.sources import text

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    hub.hub_reachable.cache_clear()
    with pytest.raises(HubUnavailableError, match="save_to_disk"):
        ImageTextDataModule(dataset="someone/flickr-captions")
    hub.hub_reachable.cache_clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def not_cached(*args):
        raise ConnectionError("Couldn't reach 'someone/flickr-captions' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(text, "load_dataset", not_cached)  # every hub name goes through sources.text.load_hub
    with pytest.raises(HubUnavailableError, match=r"^cannot load dataset 'someone/flickr-captions': not in the "
                       r"Hugging Face cache \(HF_HUB_OFFLINE=1\); save it where there is internet"):
        ImageTextDataModule(dataset="someone/flickr-captions")
    with pytest.raises(FileNotFoundError, match="neither digits, a hub name"):
        ImageTextDataModule(dataset="./no/such/folder")


def test_zero_shot_on_own_images_takes_any_classes_but_scoring_digits_needs_ten(tmp_path):
    Image.new("L", (8, 8), color=200).save(tmp_path / "mine.png")
    dm = ImageTextDataModule(batch_size=2, predict_dir=str(tmp_path), label_names=["zero", "one", "two"])
    dm.setup("predict")
    assert dm.zero_shot_prompts()["prompt_class"].tolist() == [0, 1, 2] * len(dm.zero_shot_templates)
    assert next(iter(dm.predict_dataloader()))["path"][0].endswith("mine.png")
    for stage in (TrainerFn.FITTING, TrainerFn.VALIDATING, TrainerFn.TESTING):  # as the Trainer calls setup
        with pytest.raises(ValueError, match=rf"^digits has 10 classes \(0..9\) but label_names lists 3: "
                                             rf"{stage.value} scores the digits' labels, so list ten names"):
            dm.setup(stage)
