"""Each command's own ``version_N`` (``claim_log_versions``), made with an atomic mkdir before anything is
written: Lightning's loggers pick the next version by listing the directory, which two commands started at once
share (and then overwrite each other's config.yaml, or a failed one takes back the other's)."""

from __future__ import annotations

import contextlib
import os
from typing import Any

# the version_N this command claimed, in the environment of the DDP ranks Lightning's launcher starts from it
VERSION_ENV = "BIGMODEL_LOG_VERSION"


def claim_log_versions(loggers: list[Any]) -> list[tuple[str, str]]:
    """Gives the TensorBoard/CSV loggers that would take the next ``version_N`` (no ``version`` configured) a
    directory this command made: ``os.mkdir`` fails for all but one of two commands started at once, and the other
    tries the next number, so no two commands share a version (config.yaml, hparams, a failed one's take-back).
    One number for all of them, so one command's loggers land side by side. Returns each directory made, with the
    topmost of its parents that it made (what ``cleanup.take_back`` may remove after a failure)."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    auto = [lg for lg in loggers if isinstance(lg, (TensorBoardLogger, CSVLogger))
            and getattr(lg, "_version", 0) is None and "://" not in os.fspath(lg.root_dir)]
    if not auto:
        return []
    number = max(_next_version(os.fspath(lg.root_dir)) for lg in auto)
    tops: dict[str, str | None] = {}  # each run directory's topmost missing parent, before any is made
    while True:
        for logger in auto:
            logger._version = number  # (Lightning's loggers read their version from here; there is no setter)
        paths = list(dict.fromkeys(os.path.abspath(_version_dir(lg)) for lg in auto))
        for path in paths:
            tops.setdefault(os.path.dirname(path), _topmost_missing(os.path.dirname(path)))
        made = _make_version_dirs(paths)
        if made is not None:
            _open_csv_writers(auto)
            os.environ[VERSION_ENV] = str(number)
            return [(path, tops[os.path.dirname(path)] or path) for path in made]
        number += 1


def follow_claimed_version(loggers: list[Any]) -> None:
    """A DDP rank that Lightning's launcher started (a copy of the command) gives its loggers the version that rank 0
    claimed (``VERSION_ENV``): listing the directory after rank 0 made ``version_N``, they would take N+1, which a
    user's callback reading ``trainer.logger.log_dir`` on that rank would see (bigmodel itself reads the broadcast
    ``trainer.log_dir``). Ranks that torchrun or SLURM start on other nodes have no such variable."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    claimed = os.environ.get(VERSION_ENV)
    for logger in loggers:
        if claimed is not None and isinstance(logger, (TensorBoardLogger, CSVLogger)) and logger._version is None:
            logger._version = int(claimed)


def _open_csv_writers(loggers: list[Any]) -> None:
    """A CSV logger opens its writer now, in the version directory this command has just made (empty): opened at
    its first metrics, it found TensorBoard's config.yaml and events there and warned that the directory "exists and
    is not empty" and that previous log files would be deleted -- files of this very command, which it leaves
    alone (it rewrites only its metrics.csv and hparams.yaml). A CSV logger given a ``version`` is not touched here
    and keeps that warning for a directory of an earlier run."""
    from lightning.pytorch.loggers import CSVLogger

    for logger in loggers:
        if isinstance(logger, CSVLogger):
            logger.experiment  # noqa: B018 (the property makes the writer; it writes no file yet)


def _version_dir(logger: Any) -> str:
    """The logger's ``version_N`` as it will write it (TensorBoard's ``sub_dir`` is inside it)."""
    path = os.fspath(logger.log_dir)
    return os.path.dirname(path) if getattr(logger, "sub_dir", None) else path


def _next_version(root: str) -> int:
    """Lightning's choice: one past the highest ``version_<number>`` directory (a gap is not filled)."""
    try:
        names = os.listdir(root)
    except OSError:
        return 0
    numbers = [int(n[8:]) for n in names if n.startswith("version_") and n[8:].isdigit()
               and os.path.isdir(os.path.join(root, n))]
    return max(numbers, default=-1) + 1


def _topmost_missing(path: str) -> str | None:
    """The topmost of ``path`` and its parents that does not exist (None when ``path`` does)."""
    top = None
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        top, path = path, os.path.dirname(path)
    return top


def _make_version_dirs(paths: list[str]) -> list[str] | None:
    """Makes every one of ``paths`` (with their parents), or none when one exists already (another command's)."""
    made: list[str] = []
    for path in paths:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            os.mkdir(path)
        except FileExistsError:
            for other in made:  # this number is taken in one place: give back the others, try the next
                with contextlib.suppress(OSError):
                    os.rmdir(other)
            return None
        made.append(path)
    return made
