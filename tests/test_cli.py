"""The whole text path through the real CLI: pretrain -> fine-tune -> test -> predict, resume, DDP, links."""

import csv
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from bigmodel.commands.cli import BigModelCLI

ROOT = Path(__file__).resolve().parents[1]


def write_yaml(path: Path, config: dict) -> str:
    path.write_text(yaml.safe_dump(config))
    return str(path)


def mlm_config(tmp: Path, train_file: Path, **trainer) -> dict:
    return {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 4, "accelerator": "cpu", "devices": 1, "enable_progress_bar": False,
            "enable_model_summary": False, "log_every_n_steps": 5,
            "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": str(tmp / "runs"), "name": "mlm"}},
            **trainer,
        },
        "model": {"class_path": "bigmodel.tasks.MLMTask",
                  "init_args": {"encoder": "bert-tiny", "lr": 2e-3, "warmup": 0.1,
                                "encoder_config": {"hidden_dropout": 0.0, "attention_dropout": 0.0}}},
        "data": {"class_path": "bigmodel.data.CorpusDataModule",
                 "init_args": {"train_files": str(train_file), "wordpiece_vocab_size": 1000, "block_size": 64,
                               "batch_size": 16}},
    }


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, pydoc_text):
    tmp = tmp_path_factory.mktemp("pretrain")
    cli = BigModelCLI(args=["fit", "-c", write_yaml(tmp / "mlm.yaml", mlm_config(tmp, pydoc_text))])
    return tmp, cli


def test_mlm_pretraining_lowers_the_loss_on_real_text(pretrained):
    tmp, cli = pretrained
    vocab = cli.model.hparams.vocab_size
    assert vocab == len(cli.datamodule.tokenizer) == 1000  # linked from the data module
    metrics = {k: round(v.item(), 4) for k, v in cli.trainer.callback_metrics.items()}
    assert metrics["val/loss"] < math.log(vocab) - 1.0, f"val loss not well below chance {math.log(vocab):.2f}: {metrics}"
    assert metrics["val/acc"] > 0.02, metrics  # chance: 0.001
    ckpt_dir = tmp / "runs" / "mlm" / "checkpoints"
    assert {"best.ckpt", "last.ckpt", "tokenizer"} <= {p.name for p in ckpt_dir.iterdir()}
    ckpt = torch.load(ckpt_dir / "last.ckpt", weights_only=True)  # plain data: loads without unpickling code
    assert ckpt["bigmodel"]["task"] == "mlm" and "tokenizer.json" in ckpt["tokenizer"]
    run_dir = Path(cli.trainer.log_dir)
    assert (run_dir / "config.yaml").exists() and (run_dir / "tokenizer" / "tokenizer.json").exists()


def finetune_config(tmp: Path, init_from: str | None, tokenizer: str) -> dict:
    return {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 12, "accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False,
            "log_every_n_steps": 5,
            "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": str(tmp / "runs"), "name": "cls"}},
        },
        "checkpoint": {"monitor": "val/acc", "mode": "max"},
        "model": {"class_path": "bigmodel.tasks.ClassificationTask",
                  "init_args": {"init_from": init_from, "lr": 1e-3, "warmup": 0.1}},
        "data": {"class_path": "bigmodel.data.TextClassificationDataModule",
                 "init_args": {"tokenizer": tokenizer, "dataset": "builtin:pydoc-topics", "batch_size": 32,
                               "max_length": 64}},
    }


def test_finetune_from_mlm_checkpoint_then_test_and_predict(pretrained, tmp_path):
    tmp, _ = pretrained
    last = str(tmp / "runs" / "mlm" / "checkpoints" / "last.ckpt")
    config = write_yaml(tmp_path / "cls.yaml", finetune_config(tmp_path, last, last))
    fit = BigModelCLI(args=["fit", "-c", config, "--trainer.max_epochs", "4"])  # val/acc 0.53-0.64 (seeds 0-2)
    pre = torch.load(last, weights_only=True)["state_dict"]["net.encoder.layers.0.attn.qkv.weight"]
    assert fit.model.hparams.num_classes == 8 and len(fit.model.class_names) == 8
    assert fit.trainer.callback_metrics["val/acc"] > 0.35, fit.trainer.callback_metrics  # largest class: 25%
    best = tmp_path / "runs" / "cls" / "checkpoints" / "best.ckpt"
    tuned = torch.load(best, weights_only=True)["state_dict"]["net.encoder.layers.0.attn.qkv.weight"]
    assert not torch.equal(pre, tuned)  # the encoder was fine-tuned, starting from the checkpoint

    test = BigModelCLI(args=["test", "-c", config, "--ckpt_path", str(best)])
    assert test.trainer.callback_metrics["test/acc"] > 0.4, test.trainer.callback_metrics  # largest: 33%
    assert {"test/f1", "test/precision", "test/recall"} <= set(test.trainer.callback_metrics)
    matrix = list(csv.reader(open(Path(test.trainer.log_dir) / "confusion_matrix.csv")))
    assert len(matrix) == 9 and sum(int(v) for row in matrix[1:] for v in row[1:]) == len(test.datamodule.datasets["test"])

    texts = tmp_path / "texts.txt"
    texts.write_text("The for statement is used to iterate over the elements of a sequence.\n"
                     "Return a copy of the string with leading characters removed.\n")
    out = tmp_path / "pred.jsonl"
    BigModelCLI(args=["predict", "-c", config, "--ckpt_path", str(best),
                      "--data.init_args.predict_files", str(texts), "--predictions.output", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"][:7] for r in rows] == ["The for", "Return "]
    for r in rows:
        probs = [v for k, v in r.items() if k.startswith("prob_")]
        assert len(probs) == 8 and abs(sum(probs) - 1) < 1e-4 and r["class_name"] in fit.model.class_names


def test_init_from_loads_the_pretrained_encoder_when_a_fit_starts(pretrained, tmp_path):
    tmp, _ = pretrained
    last = str(tmp / "runs" / "mlm" / "checkpoints" / "last.ckpt")
    config = write_yaml(tmp_path / "cls.yaml", finetune_config(tmp_path, last, last))
    cli = BigModelCLI(args=["fit", "-c", config, "--trainer.max_steps", "0", "--trainer.num_sanity_val_steps", "0"])
    saved = torch.load(last, weights_only=True)["state_dict"]
    encoder = cli.model.net.encoder.state_dict()
    assert len(encoder) == len([k for k in saved if k.startswith("net.encoder.")])
    for key, value in encoder.items():
        assert torch.equal(value, saved[f"net.encoder.{key}"]), key


def test_init_from_checks_task_and_vocabulary(pretrained, tmp_path, pydoc_text):
    from bigmodel.tasks import ClassificationTask

    tmp, _ = pretrained
    last = str(tmp / "runs" / "mlm" / "checkpoints" / "last.ckpt")
    with pytest.raises(ValueError, match="vocabulary of 1000 tokens but the tokenizer has 999"):
        ClassificationTask(num_classes=2, vocab_size=999, init_from=last)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ClassificationTask(num_classes=2, vocab_size=1000, init_from=str(tmp_path / "missing.ckpt"))
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        ClassificationTask(num_classes=2, vocab_size=1000, init_from=str(tmp_path / "bad.ckpt"))


def test_resume_from_last_continues_where_it_stopped(tmp_path, pydoc_text):
    """A checkpoint saved at the end of an epoch resumes with the whole next epoch (no batch skipped or repeated)."""
    small = tmp_path / "small.txt"
    small.write_text("\n".join(pydoc_text.read_text().splitlines()[:250]))
    config = mlm_config(tmp_path, small, max_epochs=1, limit_val_batches=2)
    path = write_yaml(tmp_path / "mlm.yaml", config)
    first = BigModelCLI(args=["fit", "-c", path])
    per_epoch = first.trainer.global_step
    assert per_epoch == first.trainer.num_training_batches > 3
    resumed = BigModelCLI(args=["fit", "-c", path, "--trainer.max_epochs", "2", "--ckpt_path", "last"])
    assert resumed.trainer.global_step == 2 * per_epoch and resumed.trainer.current_epoch == 2
    last = torch.load(tmp_path / "runs" / "mlm" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2 * per_epoch and last["epoch"] == 1


def test_gradient_accumulation_steps_the_optimizer_every_k_batches(tmp_path, pydoc_text):
    config = mlm_config(tmp_path, pydoc_text, max_epochs=1, limit_train_batches=6, limit_val_batches=1,
                        accumulate_grad_batches=3)
    cli = BigModelCLI(args=["fit", "-c", write_yaml(tmp_path / "mlm.yaml", config)])
    assert cli.trainer.global_step == 2
    assert cli.trainer.lr_scheduler_configs[0].scheduler.last_epoch == 2  # the schedule counts optimizer steps


def test_ddp_two_cpu_processes_see_different_data(tmp_path, pydoc_text):
    """The real `bigmodel` command, 2 gloo ranks; also checks the vocab_size link lands in the checkpoint."""
    lines = pydoc_text.read_text().splitlines()[:400]
    small = tmp_path / "small.txt"
    small.write_text("\n".join(lines))
    config = mlm_config(tmp_path, small, max_epochs=1, limit_val_batches=2)
    record = tmp_path / "record"
    cmd = [sys.executable, "-m", "bigmodel", "fit", "-c", write_yaml(tmp_path / "mlm.yaml", config),
           "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
           "--trainer.callbacks+=tests.helpers.RecordBlocks", f"--trainer.callbacks.dir={record}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((record / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in ranks)
    assert ranks[1]["logger_dir"] == ranks[0]["logger_dir"]  # rank 1's logger knows rank 0's version_N, not N+1
    seen = [{tuple(b) for b in r["blocks"]} for r in ranks]
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    # each rank takes half of one (seed, epoch) order (our rank-aware sampler, not re-split by Lightning)
    size = ranks[0]["dataset_size"]
    assert len(ranks[0]["blocks"]) == len(ranks[1]["blocks"]) == math.ceil(size / 2) // 16 * 16  # drop_last
    ckpt = torch.load(tmp_path / "runs" / "mlm" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["vocab_size"] == 1000


def test_two_nodes_of_one_process_each_train_as_one_run(tmp_path, pydoc_text):
    """Multi-node DDP as a cluster runs it, on this machine: one `bigmodel fit` per node, told its NODE_RANK and the
    master's address (what torchrun/SLURM set). The ranks see disjoint data and end with bit-identical weights."""
    small = tmp_path / "small.txt"
    small.write_text("\n".join(pydoc_text.read_text().splitlines()[:300]))
    config = write_yaml(tmp_path / "mlm.yaml", mlm_config(tmp_path, small, max_epochs=1, limit_val_batches=2))
    record = tmp_path / "record"
    cmd = [sys.executable, "-m", "bigmodel", "fit", "-c", config, "--trainer.strategy", "ddp", "--trainer.devices",
           "1", "--trainer.num_nodes", "2", "--trainer.accelerator", "cpu",
           "--trainer.callbacks+=tests.helpers.RecordBlocks", f"--trainer.callbacks.dir={record}"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nodes = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={
        **os.environ, "PYTHONPATH": str(ROOT), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
        "NODE_RANK": str(rank)}) for rank in (0, 1)]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    ranks = [json.loads((record / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and ranks[0]["steps"] == ranks[1]["steps"] > 0
    seen = [{tuple(b) for b in r["blocks"]} for r in ranks]
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    assert ranks[0]["weights"] == ranks[1]["weights"]  # gradients all-reduced across "nodes" every step
    assert (tmp_path / "runs" / "mlm" / "checkpoints" / "last.ckpt").is_file()


def test_configuration_errors_are_one_line(tmp_path, pydoc_text):
    config = mlm_config(tmp_path, pydoc_text)
    config["data"]["init_args"]["text_column"] = "body"
    proc = subprocess.run(
        [sys.executable, "-m", "bigmodel", "fit", "-c", write_yaml(tmp_path / "bad.yaml", config)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("bigmodel: error: text column 'body' not found; columns are ['text']"), proc.stderr[-2000:]


def test_same_seed_gives_identical_metrics(tmp_path, pydoc_text):
    config = mlm_config(tmp_path, pydoc_text, max_epochs=1, limit_train_batches=5, limit_val_batches=3)
    config["trainer"]["deterministic"] = True
    path = write_yaml(tmp_path / "mlm.yaml", config)
    runs = [BigModelCLI(args=["fit", "-c", path]).trainer.callback_metrics for _ in range(2)]
    assert runs[0].keys() == runs[1].keys() and "val/loss" in runs[0]
    # the second fresh run under the same name kept the first run's checkpoints
    previous = list((tmp_path / "runs" / "mlm" / "checkpoints" / "previous").glob("*/last.ckpt"))
    assert len(previous) == 1 and (tmp_path / "runs" / "mlm" / "checkpoints" / "last.ckpt").exists()
    for key in runs[0]:
        assert torch.equal(runs[0][key], runs[1][key]), key


def test_masked_positions_padded_to_a_multiple_train_and_validate_to_the_same_numbers(tmp_path, pydoc_text):
    runs = []
    for multiple in (None, 64):
        config = mlm_config(tmp_path / str(multiple), pydoc_text, max_epochs=1, limit_train_batches=5,
                            limit_val_batches=3)
        config["trainer"]["deterministic"] = True
        config["data"]["init_args"]["masked_positions_multiple_of"] = multiple
        path = write_yaml(tmp_path / f"mlm{multiple}.yaml", config)
        runs.append(BigModelCLI(args=["fit", "-c", path]).trainer.callback_metrics)
    assert {"train/loss", "train/acc", "val/loss", "val/acc"} <= runs[0].keys() == runs[1].keys()
    for key in runs[0]:  # bit-identical on the CPU where this was written; the padded rows only add zeros
        torch.testing.assert_close(runs[1][key], runs[0][key], rtol=1e-6, atol=0, msg=key)


@pytest.mark.parametrize("mode", ["stop", "skip"])
def test_nonfinite_gradients_stop_or_skip(tmp_path, pydoc_text, mode):
    from bigmodel.tasks import MLMTask

    original = MLMTask.training_step

    def poisoned(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        return loss * float("nan") if batch_idx == 1 else loss

    config = mlm_config(tmp_path, pydoc_text, max_epochs=1, limit_train_batches=3, limit_val_batches=1)
    config["model"]["init_args"]["nonfinite"] = mode
    path = write_yaml(tmp_path / "mlm.yaml", config)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MLMTask, "training_step", poisoned)
        if mode == "stop":
            # the fused AdamW skipped the bad step on the device; the check is read at the epoch's end (3 steps,
            # log_every_n_steps 5), which stops the run naming the first bad step
            with pytest.raises(FloatingPointError, match=r"non-finite gradients at step 1 \(epoch 0, batch 1 of"
                                                         r".*skipped \(1 skipped by step 3"):
                BigModelCLI(args=["fit", "-c", path])
            # the step reached is saved (its parameters are finite): resume with a lower lr from there
            last = torch.load(tmp_path / "runs" / "mlm" / "checkpoints" / "last.ckpt", weights_only=True)
            assert last["global_step"] == 3 and last["loops"]["fit_loop"]["epoch_loop.batch_progress"]
            assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
            return
        cli = BigModelCLI(args=["fit", "-c", path])
    assert cli.model.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in cli.model.parameters())


def test_a_save_that_dies_midway_leaves_the_previous_checkpoint(tmp_path, pydoc_text, monkeypatch):
    config = mlm_config(tmp_path, pydoc_text, max_epochs=1, limit_train_batches=4, limit_val_batches=1)
    config["checkpoint"] = {"monitor": None, "every_n_train_steps": 2}
    cli = BigModelCLI(args=["fit", "-c", write_yaml(tmp_path / "mlm.yaml", config)])
    from bigmodel.run.checkpoint_io import AtomicCheckpointIO

    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)  # temp file beside the target
    last = tmp_path / "runs" / "mlm" / "checkpoints" / "last.ckpt"
    good = last.read_bytes()
    real_save = torch.save

    def dies_midway(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt  # as if killed while writing

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        cli.trainer.save_checkpoint(last)
    monkeypatch.setattr(torch, "save", real_save)
    assert last.read_bytes() == good and not list(last.parent.glob("*.tmp-*"))
    assert torch.load(last, weights_only=True)["global_step"] == 4


def test_an_unknown_command_lists_every_command(monkeypatch, capsys):
    from bigmodel.__main__ import main
    from bigmodel.commands import COMMANDS

    monkeypatch.setattr(sys, "argv", ["bigmodel", "frobnicate", "-c", "x.yaml"])
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 2
    assert capsys.readouterr().err == (f"bigmodel: error: unknown command 'frobnicate'; choose one of "
                                       f"{', '.join(COMMANDS)} -- see `bigmodel --help`\n")
    assert {"sweep", "results", "compare", "export", "bench"} <= set(COMMANDS)  # Lightning's list had only four


def test_ctrl_c_while_the_command_starts_is_one_line(monkeypatch, capsys):
    import builtins

    from bigmodel.__main__ import main

    real_import = builtins.__import__

    def interrupted(name, *args, **kwargs):
        if name == "bigmodel.commands.cli":
            raise KeyboardInterrupt  # as a Ctrl-C during the seconds of importing Lightning
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", interrupted)
    monkeypatch.setattr(sys, "argv", ["bigmodel", "fit", "-c", "x.yaml"])
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 130
    assert capsys.readouterr().err == "bigmodel: interrupted by Ctrl-C while starting; nothing ran\n"
