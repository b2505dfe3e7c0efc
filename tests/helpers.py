"""Test helpers; the callbacks are importable by CLI subprocesses (``--trainer.callbacks+=tests.helpers.X``)."""

import csv
import hashlib
import json
import os
import signal

import lightning as L
import torch


def write_table(path, rows, header=("text", "label")) -> str:
    """A CSV file with a header row; returns its path as a string."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


class RecordBlocks(L.Callback):
    """Writes the unmasked token blocks each rank trained on to ``<dir>/rank<N>.json``."""

    def __init__(self, dir: str) -> None:
        self.dir = dir
        self.blocks: list[list[int]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        ids = batch["input_ids"].clone()
        ids.view(-1)[batch["masked_positions"]] = batch["masked_labels"]
        self.blocks += ids.tolist()

    def on_train_end(self, trainer, pl_module) -> None:
        os.makedirs(self.dir, exist_ok=True)
        with open(os.path.join(self.dir, f"rank{trainer.global_rank}.json"), "w") as f:
            json.dump({"blocks": self.blocks, "world_size": trainer.world_size,
                       "dataset_size": len(trainer.train_dataloader.dataset), "weights": weights_digest(pl_module),
                       "steps": trainer.global_step, "logger_dir": getattr(trainer.logger, "log_dir", None)}, f)


def weights_digest(module) -> str:
    """A hash of every parameter's bytes: equal across ranks only if their weights are bit-identical."""
    digest = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        digest.update(name.encode() + p.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class KillAtStep(L.Callback):
    """SIGKILLs its own process after optimizer step ``step``: a job killed without warning mid-epoch."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class SignalAtStep(L.Callback):
    """Sends ``signal_name`` (SIGTERM, SIGINT) to its own process after optimizer step ``step``, as SLURM,
    Kubernetes or a user's Ctrl-C would; ``batch`` instead sends it after that batch index of the first epoch;
    ``rank``: only in that DDP rank."""

    def __init__(self, step: int = -1, signal_name: str = "SIGTERM", batch: int = -1, rank: int | None = None) -> None:
        self.step, self.signum, self.batch, self.rank = step, getattr(signal, signal_name), batch, rank
        self.sent = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.rank is not None and trainer.global_rank != self.rank:
            return
        if not self.sent and (trainer.global_step == self.step or batch_idx == self.batch):
            self.sent = True
            os.kill(os.getpid(), self.signum)


class FailOnRank(L.Callback):
    """Raises a bigmodel error about the user's input (one line) in DDP rank ``rank`` only, after optimizer step
    ``step``: what bad data met by one rank looks like, while the others wait for it in the next collective."""

    def __init__(self, rank: int, step: int = 1) -> None:
        self.rank, self.step = rank, step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            from bigmodel import UsageError

            raise UsageError(f"bad input met by rank {self.rank}: fix it")


class SignalAtSanityCheck(L.Callback):
    """SIGTERM to its own process while the sanity check runs: after Lightning's handler, before training."""

    def on_sanity_check_start(self, trainer, pl_module) -> None:
        os.kill(os.getpid(), signal.SIGTERM)


class SignalInEvaluation(L.Callback):
    """SIGTERM to its own process at the first batch of a validate or test command (Lightning's evaluation loop then
    stops with its SIGTERMException)."""

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0 and not trainer.sanity_checking:
            os.kill(os.getpid(), signal.SIGTERM)

    on_test_batch_start = on_validation_batch_start


class FailForSeed(L.Callback):
    """Raises when training starts in the run seeded with ``seed``: one seed of a sweep failing, for a cause outside
    its settings (a lost node) -- gone once ``$FAIL_FOR_SEED_RECOVERED`` is set, so the same sweep rerun finishes."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_start(self, trainer, pl_module) -> None:
        if os.environ.get("PL_GLOBAL_SEED") == str(self.seed) and not os.environ.get("FAIL_FOR_SEED_RECOVERED"):
            raise RuntimeError(f"seed {self.seed} fails on purpose")
