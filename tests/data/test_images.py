"""Image data: the offline digits split, folders, and augmentation that agrees between workers and the device."""

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from bigmodel.data import ImageDataModule
from bigmodel.data.augment import AugmentConfig, BatchAugment, batch_mixer, random_erase, random_translate, sample_transform
from bigmodel.data.sampling import EpochIndexed
from bigmodel.data.sources.images import IMAGENET_MEAN, IMAGENET_STD


def test_digits_is_a_fixed_real_split():
    a = ImageDataModule(dataset="digits", seed=1)
    b = ImageDataModule(dataset="digits", seed=2)
    for dm in (a, b):
        dm.setup("fit")
    assert {k: len(v) for k, v in a.datasets.items()} == {"train": 1257, "validation": 180, "test": 360}
    assert torch.equal(a.datasets["test"].images, b.datasets["test"].images)  # the seed does not move the split
    assert a.num_classes == 10 and a.class_names == [str(i) for i in range(10)]
    images = a.datasets["train"].images
    assert images.dtype == torch.uint8 and images.shape[1:] == (1, 8, 8) and images.max() == 255
    batch = next(iter(a.train_dataloader()))  # stored as uint8, normalised (and augmented) by the training collate
    assert batch["pixel_values"].dtype == torch.float32 and abs(a.datasets["train"].images.float().mean() / 255
                                                                - a.mean[0]) < 1e-6


def test_on_device_batches_are_gathered_whole_and_normalised_like_the_worker_path():
    workers = ImageDataModule(dataset="digits", batch_size=16)
    device = ImageDataModule(dataset="digits", batch_size=16, on_device=True)
    workers.setup("fit"), device.setup("fit")
    batch = next(iter(device.val_dataloader()))
    assert batch["pixel_values"].dtype == torch.uint8 and batch["pixel_values"].shape == (16, 1, 8, 8)
    on_device = device.on_after_batch_transfer(batch, 0)["pixel_values"]
    per_image = next(iter(workers.val_dataloader()))["pixel_values"]
    torch.testing.assert_close(on_device, per_image)
    fetched = EpochIndexed(device.datasets["train"]).__getitems__([(0, 3), (0, 5)])
    assert torch.equal(fetched["labels"], device.datasets["train"].labels[[3, 5]])


def test_random_translate_is_a_padded_crop_per_image():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (32, 3, 12, 12), dtype=torch.uint8)
    out = random_translate(images, 2, torch.Generator().manual_seed(0))
    padded = F.pad(images, (2, 2, 2, 2))
    offsets = set()
    for b in range(32):
        match = [(i, j) for i in range(5) for j in range(5) if torch.equal(out[b], padded[b, :, i:i + 12, j:j + 12])]
        assert match, f"image {b} is not a crop of its padded self"
        offsets.add(match[0])
    assert len(offsets) > 5  # each image draws its own offset


def test_random_erase_boxes():
    x = torch.ones(200, 3, 16, 16)
    erased = random_erase(x, 0.5, torch.Generator().manual_seed(0))
    hit = (erased == 0).all(1).flatten(1)
    fraction = hit.float().mean(1)
    assert 60 < int((fraction > 0).sum()) < 140  # about half the images
    assert fraction.max() <= 0.4 and fraction[fraction > 0].min() >= 0.01  # 2-33 % of the area, rounded to pixels
    assert torch.equal(random_erase(x, 0.0), x)


@pytest.mark.parametrize("mixup, cutmix", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_mixup_cutmix_targets_are_distributions(mixup, cutmix):
    mixer = batch_mixer(AugmentConfig(mixup_alpha=mixup, cutmix_alpha=cutmix), num_classes=10)
    images, labels = torch.rand(64, 3, 32, 32), torch.randint(0, 10, (64,))
    torch.manual_seed(0)
    mixed, targets = mixer(images, labels)
    assert targets.shape == (64, 10) and (targets >= 0).all()
    torch.testing.assert_close(targets.sum(-1), torch.ones(64))
    assert not torch.equal(mixed, images)
    allowed = F.one_hot(labels, 10) + F.one_hot(labels.roll(1), 10)  # each image mixes with its batch neighbour
    assert (targets[allowed == 0] == 0).all()


def test_batch_augment_runs_the_whole_recipe_on_uint8_batches():
    cfg = AugmentConfig(crop_padding=4, horizontal_flip=True, auto_augment="randaugment", random_erasing=0.25)
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    out = BatchAugment(cfg, None, (0.5,) * 3, (0.25,) * 3)(images, torch.Generator().manual_seed(0))
    assert out.shape == (40, 3, 32, 32) and out.dtype == torch.float32 and torch.isfinite(out).all()
    resized = BatchAugment(None, 48, (0.5,) * 3, (0.25,) * 3)(images)
    assert resized.shape == (40, 3, 48, 48)
    single = sample_transform(cfg, None, (0.5,) * 3, (0.25,) * 3, native_size=32)(images[0])
    assert single.shape == (3, 32, 32)


def make_folder(root, classes=("cat", "dog"), per_class=6, size=20):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (size, size), color=(40 * c + i, 100, 200)).save(root / name / f"{i}.png")


def test_image_folder_with_held_out_validation_and_predict_paths(tmp_path):
    make_folder(tmp_path / "imgs")
    dm = ImageDataModule(dataset=str(tmp_path / "imgs"), image_size=16, batch_size=4, validation_fraction=0.25,
                         predict_dir=str(tmp_path / "imgs" / "dog"), crop_padding=2, horizontal_flip=True)
    dm.setup("fit")
    assert dm.class_names == ["cat", "dog"] and len(dm.datasets["train"]) == 9 and len(dm.datasets["validation"]) == 3
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixel_values"].shape == (4, 3, 16, 16) and batch["labels"].dtype == torch.int64
    predict = next(iter(dm.predict_dataloader()))
    assert predict["path"][0].endswith("dog/0.png")
    with pytest.raises(ValueError, match="has no test split"):
        dm.test_dataloader()
    assert dm.eval_preprocessing() == {"image_size": 16, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                                       "num_channels": 3}  # what a checkpoint records for export


def test_image_folder_errors(tmp_path):
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"has no images: expected .*/<class name>/<image>"):
        ImageDataModule(dataset=str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="neither a known name"):
        ImageDataModule(dataset=str(tmp_path / "nowhere"), on_device=True)  # the path is the problem, not on_device
    make_folder(tmp_path / "ok")
    with pytest.raises(ValueError, match="on_device keeps a whole dataset in memory"):
        ImageDataModule(dataset=str(tmp_path / "ok"), on_device=True)


def test_hidden_folders_and_files_are_not_classes_or_images(tmp_path):
    """Jupyter's .ipynb_checkpoints beside the class folders was a class (here: validation 'differs from train's');
    macOS's ._0.png beside 0.png was read as an image and stopped the epoch that drew it."""
    make_folder(tmp_path / "data" / "train")
    make_folder(tmp_path / "data" / "val", per_class=2)
    (tmp_path / "data" / "train" / ".ipynb_checkpoints").mkdir()
    Image.new("RGB", (20, 20)).save(tmp_path / "data" / "train" / ".ipynb_checkpoints" / "copy.png")
    (tmp_path / "data" / "train" / "cat" / "._0.png").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
    (tmp_path / "data" / "train" / "dog" / "UPPER.PNG").write_bytes((tmp_path / "data" / "train" / "dog" / "0.png")
                                                                   .read_bytes())
    dm = ImageDataModule(dataset=str(tmp_path / "data"), image_size=16, batch_size=13, num_workers=0)
    dm.setup("fit")
    assert dm.class_names == ["cat", "dog"] and len(dm.datasets["train"]) == 13  # 12 + UPPER.PNG
    assert next(iter(dm.train_dataloader()))["labels"].tolist().count(1) == 7
    make_folder(tmp_path / "data" / "test", classes=("cat", "cow"), per_class=1)
    with pytest.raises(ValueError, match=r"^the test folder's classes differ from train's: \['cow'\] not in train; "
                                         r"\['dog'\] missing; every split needs the same class subfolders$"):
        ImageDataModule(dataset=str(tmp_path / "data"), image_size=16, num_workers=0).setup("fit")


def test_predict_files_take_the_training_images_size_and_channels(tmp_path):
    make_folder(tmp_path / "photos", classes=("any",), per_class=2, size=30)
    dm = ImageDataModule(dataset="digits", predict_dir=str(tmp_path / "photos"), batch_size=2)
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert batch["pixel_values"].shape == (2, 1, 8, 8) and batch["path"][1].endswith("1.png")
    assert dm.eval_preprocessing() == {"image_size": 8, "mean": list(dm.mean), "std": list(dm.std), "num_channels": 1}
    assert 0.2 < dm.mean[0] < 0.4  # the digits' own statistics


def test_on_device_batches_reach_a_bf16_true_model_in_its_dtype(tmp_path):
    import functools

    import lightning as L

    from bigmodel.nn import SmallCNN
    from bigmodel.tasks import ClassificationTask

    dm = ImageDataModule(dataset="digits", batch_size=32, on_device=True, crop_padding=1, mixup_alpha=0.2)
    task = ClassificationTask(num_classes=10, backbone=functools.partial(SmallCNN, image_size=8))
    trainer = L.Trainer(accelerator="cpu", precision="bf16-true", max_steps=2, limit_val_batches=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(task, dm)
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train/loss"])


def test_write_digit_images_saves_test_digits_under_their_labels(tmp_path):
    from bigmodel.data.sources.images import load_digits_splits, write_digit_images

    images, labels = load_digits_splits().test
    paths = write_digit_images(tmp_path / "my_digits", count=4)
    assert [p.name for p in paths] == [f"test{i}_label{int(labels[i])}.png" for i in range(4)]
    for i, path in enumerate(paths):
        picture = Image.open(path)
        assert picture.mode == "L" and picture.size == (8, 8)
        assert torch.equal(torch.tensor(list(picture.getdata()), dtype=torch.uint8).view(1, 8, 8), images[i])


def test_an_unreadable_predict_file_is_one_line_naming_it_before_any_batch(tmp_path):
    make_folder(tmp_path / "photos", classes=("any",), per_class=2, size=30)
    (tmp_path / "photos" / "any" / "broken.png").write_text("not an image")
    for predict_dir in ("photos", "photos/any/broken.png"):
        dm = ImageDataModule(dataset="digits", predict_dir=str(tmp_path / predict_dir), batch_size=2)
        with pytest.raises(ValueError, match=r"^cannot read image '[^']*broken.png' \(UnidentifiedImageError\): "
                                             r"remove or convert it \(readable: .*\.gif"):
            dm.setup("predict")
    (tmp_path / "photos" / "any" / "also.jpg").write_bytes(b"\xff\xd8 nothing")
    with pytest.raises(ValueError, match=r"also.jpg' and 1 more file \(UnidentifiedImageError\): remove or convert "
                                         r"them"):
        ImageDataModule(dataset="digits", predict_dir=str(tmp_path / "photos")).setup("predict")
    # a file whose header reads but whose pixels do not (truncated) is the same one line when its batch is made
    good = tmp_path / "truncated" / "0.png"
    good.parent.mkdir()
    Image.effect_noise((64, 64), 50).save(good)
    good.write_bytes(good.read_bytes()[:200])
    dm = ImageDataModule(dataset="digits", predict_dir=str(good.parent), batch_size=2)
    dm.setup("predict")
    with pytest.raises(ValueError, match=r"^cannot read image '[^']*0.png' \(OSError\): remove or convert it"):
        dm.datasets["predict"][0]


def test_transparent_and_gif_predict_files_read_like_the_digits_they_show(tmp_path):
    from bigmodel.data.sources.images import ImageFiles, write_digit_images

    def read_rgb(path):
        return ImageFiles([str(path)], transform=lambda image: image)[0]["pixel_values"]

    digit = Image.open(write_digit_images(tmp_path / "photos", count=1)[0])  # 8x8 grey, ink-high on black
    assert digit.getextrema() == (0, 255)
    for ink in (0, 255):  # a glyph drawn only in alpha, in black or in white ink, on a transparent background
        glyph = Image.new("RGBA", digit.size, (ink, ink, ink, 0))
        glyph.putalpha(digit)
        glyph.save(tmp_path / "photos" / f"glyph{ink}.png")
        assert read_rgb(tmp_path / "photos" / f"glyph{ink}.png").getpixel((0, 0)) == (255, 255, 255)
    digit.save(tmp_path / "photos" / "digit.gif")
    dm = ImageDataModule(dataset="digits", predict_dir=str(tmp_path / "photos"), batch_size=4)
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert [p.rsplit("/", 1)[1] for p in batch["path"]] == ["digit.gif", "glyph0.png", "glyph255.png",
                                                            "test0_label6.png"]
    for i in range(3):
        torch.testing.assert_close(batch["pixel_values"][i], batch["pixel_values"][3])
    # an opaque colour image with an alpha channel is its colours; a half-transparent one goes onto white
    Image.new("RGBA", (4, 4), (200, 0, 0, 255)).save(tmp_path / "red.png")
    Image.new("RGBA", (4, 4), (0, 0, 0, 128)).save(tmp_path / "half.png")
    assert read_rgb(tmp_path / "red.png").getpixel((0, 0)) == (200, 0, 0)
    assert read_rgb(tmp_path / "half.png").getpixel((0, 0)) == (127, 127, 127)


def save_and_stop(path, step):
    """A Lightning callback that saves a checkpoint after optimizer step ``step`` and stops there, as bigmodel's
    signal handler does (lightning is imported where a test fits, as in the bf16 test above)."""
    import lightning as L

    class SaveAndStop(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if trainer.global_step == step:
                trainer.save_checkpoint(path)
                trainer.should_stop = True

    return SaveAndStop()


@pytest.mark.parametrize("on_device, num_workers", [(False, 0), (False, 1), (True, 0)])
def test_a_fit_resumed_mid_epoch_augments_and_ends_as_an_unbroken_one(tmp_path, on_device, num_workers):
    """Random crops, flips and erasing in the loader (``on_device: false``, in the main process or a worker) or on
    the device: a fit stopped after step 3 of an epoch of 5 and resumed from its checkpoint ends with the parameters
    of one that never stopped (each image's augmentation at an epoch comes from (seed, epoch, image) alone)."""
    import functools

    import lightning as L

    from bigmodel.nn import SmallCNN
    from bigmodel.tasks import ClassificationTask

    def fit(ckpt_path=None, callbacks=()):
        L.seed_everything(0)
        dm = ImageDataModule(dataset="digits", batch_size=240, num_workers=num_workers, on_device=on_device,
                             crop_padding=1, horizontal_flip=True, random_erasing=0.5)
        task = ClassificationTask(num_classes=10, backbone=functools.partial(SmallCNN, image_size=8, width=4,
                                                                             hidden=16))
        trainer = L.Trainer(accelerator="cpu", max_steps=8, limit_val_batches=1, num_sanity_val_steps=0,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, callbacks=list(callbacks), default_root_dir=tmp_path)
        trainer.fit(task, datamodule=dm, ckpt_path=ckpt_path)
        return trainer, task

    saved = tmp_path / "stopped.ckpt"
    stopped, _ = fit(callbacks=[save_and_stop(saved, 3)])
    assert stopped.global_step == 3
    resumed, task = fit(ckpt_path=saved)
    straight, reference = fit()
    assert resumed.global_step == straight.global_step == 8 and resumed.current_epoch == straight.current_epoch
    for (name, a), b in zip(reference.state_dict().items(), task.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6, msg=name)


def test_cpu_side_flips_are_drawn_per_image_and_epoch_at_their_probability():
    """``on_device: false``: each image's flip comes from (seed, epoch, index): about half the images are mirrored,
    a new half each epoch, the same again when the epoch is loaded again."""
    dm = ImageDataModule(dataset="digits", batch_size=1257, horizontal_flip=True)
    dm.setup("fit")
    images = dm.datasets["train"].images
    plain = sample_transform(None, None, dm.mean, dm.std)(images)

    def mirrored(epoch: int) -> torch.Tensor:
        items = EpochIndexed(dm.datasets["train"]).__getitems__([(epoch, i) for i in range(len(images))])
        out = dm.train_dataloader().collate_fn(items)["pixel_values"]
        return (out == plain.flip(-1)).flatten(1).all(1) & ~(out == plain).flatten(1).all(1)

    first, again, second = mirrored(0), mirrored(0), mirrored(1)
    assert torch.equal(first, again)
    assert 0.45 < first.float().mean() < 0.55 and 0.45 < second.float().mean() < 0.55
    assert 0.4 < (first != second).float().mean() < 0.6  # independent draws per epoch


@pytest.mark.parametrize("on_device", [True, False])
def test_predictions_of_the_test_split_name_each_image_by_its_index_in_it(tmp_path, on_device):
    """Without predict_dir the rows of predictions.csv had an empty text column and nothing naming their image."""
    import csv
    import functools

    import lightning as L

    from bigmodel.data.sources.images import load_digits_splits
    from bigmodel.nn import SmallCNN
    from bigmodel.run.predictions import PredictionWriter
    from bigmodel.tasks import ClassificationTask

    dm = ImageDataModule(dataset="digits", batch_size=100, on_device=on_device)
    task = ClassificationTask(num_classes=10, class_names=dm.class_names,
                              backbone=functools.partial(SmallCNN, image_size=8, width=4, hidden=8))
    out = tmp_path / "predictions.csv"
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path,
                        callbacks=[PredictionWriter(str(out))])
    trainer.predict(task, dm, return_predictions=False)
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0])[:3] == ["index", "label", "class_name"]
    assert [int(r["index"]) for r in rows] == list(range(360))
    images = load_digits_splits().test[0][[7, 300]]  # a row's index is the split image it labels
    logits = task.eval()({"pixel_values": dm._device_eval(images) if on_device else
                          torch.stack([dm.datasets["test"].transform(i) for i in images])})
    assert [int(rows[i]["label"]) for i in (7, 300)] == logits.argmax(-1).tolist()


def test_predictions_of_a_folder_test_split_name_each_image_by_its_file(tmp_path):
    make_folder(tmp_path / "imgs" / "train")
    make_folder(tmp_path / "imgs" / "test", per_class=2)
    dm = ImageDataModule(dataset=str(tmp_path / "imgs"), image_size=16, batch_size=4)
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert batch["path"][0].endswith("test/cat/0.png") and "image_index" not in batch
