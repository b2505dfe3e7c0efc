"""What a run shows in TensorBoard and in a log file, read back from the event file of short fits."""

import io
import logging
import re
from pathlib import Path

import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bigmodel.run import figures
from bigmodel.utils import figures as figures_module
from bigmodel.commands.cli import BigModelCLI
from bigmodel.run.progress import ProgressLog
from tests.test_cli import mlm_config, write_yaml

ROOT = Path(__file__).resolve().parents[1]
TEXT = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64}


def events(log_dir: str) -> EventAccumulator:
    return EventAccumulator(log_dir, size_guidance={"images": 0, "tensors": 0, "scalars": 0}).Reload()


def pictures(acc: EventAccumulator, tag: str) -> list[Image.Image]:
    out = []
    for event in acc.Images(tag):
        picture = Image.open(io.BytesIO(event.encoded_image_string))
        assert picture.size == (event.width, event.height)
        out.append(picture)
    return out


@pytest.fixture
def drawn(monkeypatch) -> dict[str, list]:
    """Every figure the figure callbacks send to TensorBoard, by tag (they still go there)."""
    by_tag: dict[str, list] = {}
    add = figures.add_figure

    def record(trainer, tag, fig):
        by_tag.setdefault(tag, []).append(fig)
        add(trainer, tag, fig)

    monkeypatch.setattr(figures, "add_figure", record)
    return by_tag


def colorbars(fig) -> int:
    return sum(im.colorbar is not None for ax in fig.axes for im in ax.images)


def fit_quietly_logged(args: list[str]) -> BigModelCLI:
    """A fit whose progress lines come every step (they come every minute in a batch job)."""
    cli = BigModelCLI(args=args, run=False)
    progress = next(cb for cb in cli.trainer.callbacks if isinstance(cb, ProgressLog))
    progress.every_seconds, progress.lines = 0.0, True
    cli.trainer.fit(cli.model, cli.datamodule)
    return cli


def test_mlm_fit_writes_attention_maps_guesses_speed_and_hparams_and_logs_progress_lines(tmp_path, pydoc_text,
                                                                                         caplog, drawn):
    config = mlm_config(tmp_path, pydoc_text, max_epochs=2, limit_train_batches=6, limit_val_batches=2,
                        log_every_n_steps=2, callbacks=[{"class_path": "bigmodel.run.monitoring.AttentionMaps",
                                                         "init_args": {"layers": [-1], "num_examples": 2}}])
    with caplog.at_level(logging.INFO):
        cli = fit_quietly_logged(["-c", write_yaml(tmp_path / "mlm.yaml", config)])
    acc = events(cli.trainer.log_dir)
    tags = acc.Tags()
    # the config's AttentionMaps (last layer, two examples; named by the path configs store) replaced the default one (first and last, one example)
    assert sorted(t for t in tags["images"] if t.startswith("attention/")) == [
        f"attention/example{i}/{name}" for i in (0, 1) for name in ("layer1", "rollout")]
    for tag in ("attention/example0/layer1", "attention/example1/rollout"):
        shots = pictures(acc, tag)
        assert len(shots) == 2 and shots[0].size[0] > 200 and shots[0].size[1] > 50, tag  # one per validation
    # 64-token blocks, 40 drawn, and the title says so; a colour bar per head; the rollout leaves [CLS] out
    heads = drawn["attention/example0/layer1"][-1]
    assert heads.get_suptitle() == "example 0, layer 1: first 40 of 64 tokens" and colorbars(heads) == 2
    rollout = drawn["attention/example0/rollout"][-1]
    strip = next(ax for ax in rollout.axes if ax.get_xticklabels())
    assert len(strip.get_xticklabels()) == 39 and "[CLS]" not in {t.get_text() for t in strip.get_xticklabels()}
    assert "[CLS] keeps" in strip.get_title() and colorbars(rollout) == 1
    text = acc.Tensors("mlm/predictions/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "**example 0:**" in text and "[MASK]" in text and "| true | top 5 |" in text
    assert len(re.findall(r"^\| \S+ \| (\S+ 0\.\d\d, ){4}\S+ 0\.\d\d \|$", text, re.M)) >= 3
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")  # the HParams tab
    best = cli.trainer.checkpoint_callback.best_model_score.item()
    assert abs(acc.Scalars("hp_metric")[-1].value - best) < 1e-6  # the HParams column: the best val/loss
    # from the first validation (no -1 placeholder), at the step of the val/loss value it repeats
    assert [s.step for s in acc.Scalars("hp_metric")] == [s.step for s in acc.Scalars("val/loss")] == [5, 11]
    assert all(s.value > 0 for s in acc.Scalars("perf/samples_per_sec"))
    assert all(s.value > 0 for s in acc.Scalars("perf/tokens_per_sec"))
    assert [s.step for s in acc.Scalars("train/grad_norm")] == [1, 3, 5, 7, 9, 11]  # logged with the others
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert re.fullmatch(r"epoch 1/2 \| step 1/12 \(8\.3 %\) \| .*train/loss \d.* \| elapsed 0:00:\d\d, left \d+:\d\d:\d\d",
                        lines[0]), lines[0]
    assert len(lines) == 12 and lines[-1].startswith("epoch 2/2 | step 12/12 (100.0 %)")
    assert sum(r.getMessage().startswith("validation at step ") for r in caplog.records) == 2


def test_vit_fit_and_test_write_image_attention_and_confusion_matrices(tmp_path, drawn):
    config = str(ROOT / "experiments" / "quickstart" / "digits_vit.yaml")
    common = ["--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
              "--trainer.accelerator", "cpu", "--trainer.limit_val_batches", "2"]
    cli = BigModelCLI(args=["fit", "-c", config, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3",
                            *common])
    acc = events(cli.trainer.log_dir)
    (attention,) = pictures(acc, "attention/example0")
    (confusion,) = pictures(acc, "val/confusion_matrix")
    assert attention.size[0] > 400 and confusion.size[0] > confusion.size[1] > 300  # two panels side by side
    (figure,) = drawn["attention/example0"]
    # the example's label and the model's guess, by class name; a colour bar beside each of 4 heads and the rollout
    assert re.fullmatch(r"\[CLS\] attention, last layer, label \d, predicted \d", figure.get_suptitle())
    assert colorbars(figure) == 5
    best = str(Path(cli.trainer.checkpoint_callback.dirpath) / "best.ckpt")
    test = BigModelCLI(args=["test", "-c", config, "--ckpt_path", best, *common])
    tags = events(test.trainer.log_dir).Tags()
    assert "test/confusion_matrix" in tags["images"] and "test/confusion_matrix/text_summary" in tags["tensors"]
    assert "hp_metric" not in tags["scalars"]  # a test measures no best-so-far
    predict = BigModelCLI(args=["predict", "-c", config, "--ckpt_path", best, *common])
    # predictions.csv beside, and no TensorBoard run that holds a placeholder hp_metric alone
    assert (Path(predict.trainer.log_dir) / "predictions.csv").is_file()
    assert events(predict.trainer.log_dir).Tags()["scalars"] == []


def test_image_text_fit_shows_validation_images_beside_their_top_captions(tmp_path, drawn, caplog):
    import warnings

    from matplotlib import font_manager

    config = str(ROOT / "experiments" / "quickstart" / "digits_image_text.yaml")
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):  # Chinese captions alone
        warnings.simplefilter("always")
        cli = BigModelCLI(args=["fit", "-c", config, "--trainer.logger.init_args.save_dir", str(tmp_path),
                                "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu",
                                "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2",
                                "--data.init_args.languages", "[zh]", "--model.init_args.encoder_config", str(TEXT)])
    acc = events(cli.trainer.log_dir)
    assert len(pictures(acc, "retrieval/example0")) == len(pictures(acc, "retrieval/example1")) == 2
    captions = cli.trainer.datamodule.splits["validation"].captions
    figure = drawn["retrieval/example0"][0]
    assert re.fullmatch(rf"validation image 0: its top 5 of {len(captions)} captions, label \d",
                        figure.get_suptitle())
    bars = next(ax for ax in figure.axes if ax.patches)
    shown = [t.get_text().removeprefix("✓ ") for t in bars.get_yticklabels()]
    assert len(shown) == 5 and set(shown) <= set(captions), shown  # as written, not decoded ("数 字 九")
    # the captions as TensorBoard text too, which the browser draws in any script
    table = acc.Tensors("retrieval/example0/text_summary")[0].tensor_proto.string_val[0].decode()
    assert table.startswith("**validation image 0: its top 5") and f" | {shown[0]} | " in table.splitlines()[4]
    # without a CJK font: one note naming the characters and a font package, not matplotlib's warning per glyph
    assert not [w for w in caught if "missing from font" in str(w.message) or "as boxes" in str(w.message)]
    boxes = [r.getMessage() for r in caplog.records if "draw caption characters as boxes" in r.getMessage()]
    if not {f.name for f in font_manager.fontManager.ttflist} & set(figures_module.CJK_FONTS):
        assert len(boxes) == 1 and "fonts-noto-cjk" in boxes[0] and "Text tab" in boxes[0], boxes
    widths = [p.get_width() for p in bars.patches]
    assert widths == sorted(widths, reverse=True) and -1 <= widths[-1] <= widths[0] <= 1  # cosine, best first
