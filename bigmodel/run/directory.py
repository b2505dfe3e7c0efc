"""A run's checkpoint directory and the guards around it, decided before anything is built.

- ``checkpoint_dir``: where the CLI's ModelCheckpoint will write, read off the parsed config.
- ``RunLock``: one fit per run name at a time (``checkpoints/.fit.lock``, an OS lock: a crashed run leaves no
  stale lock, the kernel drops it with the process).
- ``continues_run``: whether a resumed fit continues the run of a checkpoint directory (else it writes over it).
- ``read_checkpoint_meta``: a ``--ckpt_path`` is checked (exists, complete, of the configured task) before
  Lightning reads it, with one-line messages that name the alternatives on disk.
- ``write_metrics``: what a ``test``/``validate`` printed, kept as ``<log dir>/<stage>_metrics.json`` with the
  checkpoint, device and versions (``bigmodel sweep`` reads it).
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from bigmodel.nn import num_parameters
from bigmodel.tasks.checkpoints import META_KEY, archived_copies

LOCK_NAME = ".fit.lock"
SPECIAL_CKPT_PATHS = ("last", "best", "hpc", "registry")
SHARDED_META = "meta.pt"  # Lightning's name for a sharded checkpoint's non-tensor part


class RunInUseError(ValueError):
    pass


def launch_rank_zero() -> bool:
    """True in the process that starts a run (rank 0 of a launcher, torchrun or SLURM); other ranks re-run the CLI."""
    names = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")
    return all(int(os.environ.get(name, 0) or 0) == 0 for name in names)


def _get(node: Any, key: str, default: Any = None) -> Any:
    if node is None:
        return default
    if isinstance(node, dict):
        return node.get(key, default)
    return getattr(node, key, default)


def checkpoint_dir(config: Any) -> str | None:
    """Mirrors ``cli.default_checkpoint_dir`` on the parsed config: ``checkpoint.dirpath``, else
    ``<logger save_dir>/<name>/checkpoints``, else ``<default_root_dir>/checkpoints`` without a logger.
    None when the logger is not one whose directory can be read off its arguments."""
    dirpath = _get(_get(config, "checkpoint"), "dirpath")
    if dirpath:
        return os.fspath(dirpath)
    trainer = _get(config, "trainer")
    logger = _get(trainer, "logger")
    if isinstance(logger, list):
        logger = logger[0] if logger else False
    if logger is False:
        return os.path.join(os.fspath(_get(trainer, "default_root_dir") or os.getcwd()), "checkpoints")
    args = _get(logger, "init_args")
    save_dir = _get(args, "save_dir")
    if save_dir is None:
        return None
    name = _get(args, "name", "lightning_logs")
    return os.path.join(os.fspath(save_dir), str(name) if name else "", "checkpoints")


class RunLock:
    """An exclusive ``flock`` on ``<dir>/.fit.lock``, holding who took it (pid, host, start, command)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, LOCK_NAME)
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        os.makedirs(self.directory, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if isinstance(err, BlockingIOError):
                self._refuse(fd)
            os.close(fd)  # a filesystem without locks (some network mounts): run unlocked, and say so
            warnings.warn(f"cannot lock {self.path} ({err.strerror}); two fits of this run name would not be stopped")
            return
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        command = " ".join(["bigmodel", *sys.argv[1:]])[:300]
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {started}: {command}\n".encode(), 0)
        self._fd = fd

    def _refuse(self, fd: int) -> None:
        holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
        os.close(fd)
        raise RunInUseError(
            f"run directory {self.directory} is in use by another fit ({holder}); wait for it to finish or stop "
            "it, or give this run another name (--trainer.logger.init_args.name)"
        )

    @staticmethod
    def held_elsewhere(directory: str) -> bool:
        """Whether a fit holds ``<directory>/.fit.lock`` now (checked without creating it or waiting)."""
        try:
            import fcntl

            fd = os.open(os.path.join(directory, LOCK_NAME), os.O_RDONLY)
        except (ImportError, OSError):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except OSError:
            return True
        finally:
            os.close(fd)  # (drops the shared lock, if taken)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (deleting it would race a new run)
            self._fd = None


def archived_last_checkpoints(directory: str) -> list[Path]:
    """``previous/<time>/last.ckpt`` files, newest first."""
    return [Path(p) for p in archived_copies(os.path.join(directory, "last.ckpt"))]


def resolve_last(directory: str | None, subcommand: str = "fit") -> str | None:
    """``--ckpt_path last`` as Lightning resolves it, or a one-line error when only an earlier run's is left (whose
    advice fits ``subcommand``: only a fit can start afresh instead)."""
    if directory is None:
        return None
    last = os.path.join(directory, "last.ckpt")
    if os.path.isfile(last) or is_sharded(last):
        return last
    archived = archived_last_checkpoints(directory)
    if archived:
        advice = (f"resume it with --ckpt_path {archived[0]}, or drop --ckpt_path to start afresh" if subcommand == "fit"
                  else f"to {subcommand} it, use --ckpt_path {archived[0]}")
        raise FileNotFoundError(f"--ckpt_path last: {directory} has no last.ckpt of this run; an earlier run's "
                                f"checkpoints were moved to {archived[0].parent}: {advice}")
    return None


def continues_run(directory: str, ckpt_path: str) -> bool:
    """Whether a fit resumed from ``ckpt_path`` continues the run whose checkpoints are in ``directory``: it is
    that directory's last.ckpt (the run goes on: last.ckpt follows it, best.ckpt gives way only to a better score).
    From another run's checkpoint, best.ckpt or an archived one, it writes over what is there."""
    last = os.path.join(directory, "last.ckpt")
    return os.path.exists(last) and os.path.exists(ckpt_path) and os.path.samefile(last, ckpt_path)


def is_sharded(path: str) -> bool:
    """A sharded checkpoint (FSDP ``state_dict_type: sharded``): a directory of each rank's shards with Lightning's
    ``meta.pt`` holding the rest of the checkpoint (loops, callbacks, ``bigmodel``, tokenizer)."""
    return os.path.isfile(os.path.join(path, SHARDED_META))


def read_checkpoint_meta(path: str, directory: str | None = None) -> dict[str, Any]:
    """The checkpoint's ``bigmodel`` entry (``{}`` for a foreign Lightning checkpoint), read as data only."""
    if is_sharded(path):
        meta = torch.load(os.path.join(path, SHARDED_META), map_location="cpu", weights_only=True)
        return dict(meta.get(META_KEY) or {}) | {"_tokenizer": "tokenizer" in meta}
    if os.path.isdir(path):
        found = sorted(str(p) for p in Path(path).glob("*.ckpt"))[:3]
        raise ValueError(f"--ckpt_path {path!r} is a directory; give a .ckpt file" +
                         (f" (there: {', '.join(found)})" if found else ""))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--ckpt_path {path!r} does not exist{_others(path, directory)}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - truncated, corrupt or not a torch file: the same advice
        raise ValueError(
            f"--ckpt_path {path!r} is not a readable checkpoint ({type(err).__name__}: truncated or corrupt)"
            f"{_others(path, directory)}"
        ) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"--ckpt_path {path!r} is not a Lightning checkpoint (no state_dict)")
    return dict(ckpt.get(META_KEY) or {}) | {"_tokenizer": "tokenizer" in ckpt}


def _others(path: str, directory: str | None) -> str:
    """The checkpoints beside ``path`` and in the run's directory, to name in an error."""
    folders = dict.fromkeys(Path(f) for f in (os.path.dirname(path) or ".", directory) if f)
    found = [p for f in folders for p in sorted(f.glob("*.ckpt")) + archived_last_checkpoints(str(f))]
    others = [p for p in dict.fromkeys(found) if os.path.abspath(p) != os.path.abspath(path)]
    if others:
        return f"; checkpoints there: {', '.join(str(p) for p in others[:3])}"
    if not any(f.is_dir() for f in folders):  # no run of this name has saved anything here
        return ("; no run of this name has saved checkpoints here: check the run name "
                "(trainer.logger.init_args.name, save_dir) or run fit first")
    return ""


METRICS_FILE = "{stage}_metrics.json"


def device_description(trainer: Any) -> str:
    """What the run computed on, as a results table states it: GPU model and count, or the CPU and its threads."""
    device = trainer.strategy.root_device
    count = trainer.world_size
    if device.type == "cuda":
        return f"{count} x {torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{count} x CPU ({cpu}, {torch.get_num_threads()} threads)"


def parameter_counts(module: torch.nn.Module) -> dict[str, int]:
    """Total and trainable parameters of the task's model as its fine-tuning mode left them (what the fit printed;
    what a results table compares); an int8 model's are those of its float weights, which the task kept."""
    counted = getattr(module, "parameter_counts", None)
    if isinstance(counted, dict):
        return dict(counted)
    net = getattr(module, "net", module)
    return {"total": num_parameters(net), "trainable": num_parameters(net, trainable_only=True)}


def versions() -> dict[str, str]:
    """The Python, torch and Lightning a command runs with, as every record of a run names them."""
    import lightning

    return {"python": platform.python_version(), "torch": torch.__version__, "lightning": lightning.__version__}


def write_metrics(trainer: Any, stage: str) -> str | None:
    """``<log dir>/<stage>_metrics.json``: the metrics ``validate``/``test`` printed, with the checkpoint, device and
    versions that made them -- what ``bigmodel sweep`` collects, and a record beside the run's TensorBoard logs."""
    directory = trainer.log_dir  # a collective under DDP: every rank asks
    if not trainer.is_global_zero or directory is None:
        return None
    record = {
        "stage": stage,
        "metrics": {k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if v.numel() == 1},
        "ckpt_path": trainer.ckpt_path,
        "parameters": parameter_counts(trainer.lightning_module),
        "device": device_description(trainer),
        "precision": str(trainer.precision),
        "versions": versions(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    note = getattr(trainer.lightning_module, "untrained_note", lambda: None)()
    if note:  # a new head validated as drawn: its numbers are not the source model's
        record["random_head"] = note
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, METRICS_FILE.format(stage=stage))
    with open(path + ".tmp", "w", encoding="utf-8") as out:
        json.dump(record, out, indent=1)
    os.replace(path + ".tmp", path)
    return path

