import json
from pathlib import Path
from types import SimpleNamespace

import torch

from bigmodel.run.predictions import PredictionWriter


def test_jsonl_predictions_keep_non_ascii_text_readable(tmp_path):
    out = tmp_path / "predictions.jsonl"
    trainer = SimpleNamespace(global_rank=0, log_dir=str(tmp_path))
    module = SimpleNamespace(class_names=["负面", "正面"])
    batch = {"text": ["这部电影很好"], "pred": torch.tensor([1]), "probs": torch.tensor([[0.25, 0.75]])}
    PredictionWriter(str(out)).write_on_epoch_end(trainer, module, [batch], None)
    line = out.read_text(encoding="utf-8").strip()
    assert "这部电影很好" in line and "\\u" not in line
    assert json.loads(line) == {"text": "这部电影很好", "label": 1, "class_name": "正面", "prob_负面": 0.25,
                                "prob_正面": 0.75}


def _predict_setup(output, predict_files):
    """The writer's setup as ``bigmodel predict`` reaches it: after the data module's, before any batch."""
    trainer = SimpleNamespace(datamodule=SimpleNamespace(hparams={"predict_files": predict_files}))
    PredictionWriter(str(output)).setup(trainer, None, "predict")


def test_predictions_never_overwrite_a_file_being_labelled(tmp_path, monkeypatch):
    """`--predictions.output texts.txt` with `predict_files texts.txt` wrote CSV over the user's input."""
    import pytest

    monkeypatch.chdir(tmp_path)
    texts = tmp_path / "texts.csv"
    texts.write_text("text\na b\n")
    for output, files in [("texts.csv", "texts.csv"), (str(texts), ["other.txt", "*.csv"]), ("./texts.csv", "t*")]:
        with pytest.raises(ValueError) as err:
            _predict_setup(output, files)
        assert str(err.value) == (f"predictions.output {output!r} is one of the files being labelled "
                                  "(data.init_args.predict_files) and would be overwritten; give another file, e.g. "
                                  f"{str(Path(output).with_name('texts.predictions.csv'))!r}")
    assert texts.read_text() == "text\na b\n"
    _predict_setup("texts.predictions.csv", "texts.csv")  # another file: fine


def test_predictions_output_of_an_unknown_format_is_refused_before_predicting():
    import pytest

    with pytest.raises(ValueError, match=r"^predictions.output 'out.txt' must end in .csv or .jsonl: give e.g. "
                                         r"'out.csv'$"):
        _predict_setup("out.txt", None)
    _predict_setup("out.JSONL", None)


def test_a_resume_is_said_to_write_over_checkpoints_only_when_it_continues_none_of_its_directories(tmp_path):
    """Resuming one directory's last.ckpt continues that run, whatever other checkpoint callbacks the run has (each
    warned that it would be written over); a SLURM requeue's hpc checkpoint continues the job; another checkpoint
    (an archived one, another run's) writes over what is there: said, per directory."""
    import warnings

    from bigmodel.run.callbacks import _say_what_a_resume_writes_over

    first, second = tmp_path / "a", tmp_path / "b"
    for directory in (first, second):
        directory.mkdir()
        (directory / "last.ckpt").write_bytes(b"x")
    (first / "previous").mkdir()
    (first / "previous" / "last.ckpt").write_bytes(b"old")
    (tmp_path / "hpc_ckpt_1.ckpt").write_bytes(b"job")

    def resume(path, hpc=None):
        trainer = SimpleNamespace(ckpt_path=path, checkpoint_callbacks=[SimpleNamespace(dirpath=str(first)),
                                                                        SimpleNamespace(dirpath=str(second))],
                                  _checkpoint_connector=SimpleNamespace(_hpc_resume_path=hpc))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _say_what_a_resume_writes_over(trainer)
        return [str(w.message) for w in caught]

    assert resume(first / "last.ckpt") == []
    assert resume(str(tmp_path / "hpc_ckpt_1.ckpt"), hpc=str(tmp_path / "hpc_ckpt_1.ckpt")) == []
    said = resume(first / "previous" / "last.ckpt")
    assert [line.split(":")[0] for line in said] == [
        f"--ckpt_path {first / 'previous' / 'last.ckpt'} is not {directory}'s last.ckpt" for directory in (first, second)]


def _predict_on_rank(rank: int, tmp_path: Path, output: str) -> None:
    """One gloo rank of `bigmodel predict` over 5 texts in batches of 2, as Lightning hands the writer its share:
    DistributedSampler (no shuffle) deals rank 0 texts 0, 2, 4 and rank 1 texts 1, 3 and a copy of text 0."""
    import torch.distributed as dist
    from torch.utils.data import DistributedSampler

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=rank, world_size=2)
    mine = list(DistributedSampler(range(5), num_replicas=2, rank=rank, shuffle=False))
    indices = [mine[i: i + 2] for i in range(0, len(mine), 2)]
    batches = [{"text": [f"text {i}" for i in b], "pred": torch.tensor([i % 2 for i in b]),
                "probs": torch.tensor([[1.0 - i % 2, i % 2 * 1.0] for i in b])} for b in indices]
    trainer = SimpleNamespace(global_rank=rank, world_size=2, is_global_zero=rank == 0, log_dir=str(tmp_path))
    PredictionWriter(output).write_on_epoch_end(trainer, SimpleNamespace(class_names=["a", "b"]), batches, [indices])
    dist.destroy_process_group()


def test_two_ddp_ranks_write_one_predictions_file_in_input_order_each_input_once(tmp_path):
    """Each rank wrote its own file (predictions.csv and predictions.rank1.csv), each with every other input and
    rank 1's with a copy of the first: rank 0 now writes all of them, once each, in the order of the inputs."""
    import csv

    import torch.multiprocessing as mp

    for output in (tmp_path / "predictions.csv", tmp_path / "out" / "predictions.jsonl"):
        mp.start_processes(_predict_on_rank, args=(tmp_path, str(output)), nprocs=2, start_method="fork")
        (tmp_path / "store").unlink(missing_ok=True)
        if output.suffix == ".csv":
            rows = list(csv.DictReader(output.open(encoding="utf-8")))
        else:
            rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
        assert [(r["text"], int(r["label"]), r["class_name"]) for r in rows] == [
            (f"text {i}", i % 2, "ab"[i % 2]) for i in range(5)]
        assert sorted(p.name for p in output.parent.iterdir() if p.name.startswith("predictions")) == [output.name]
