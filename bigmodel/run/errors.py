"""What a user reads when something is wrong: one line, in their words, naming the fix.

The CLI's boundary (``bigmodel.commands.cli.main``) turns bigmodel's own errors about configs and data, disk and permission
failures, Lightning's configuration errors and jsonargparse's reports into ``bigmodel: error: ...`` lines. Code
outside bigmodel (a task or data module of your own) raises ``bigmodel.UsageError`` for the same one line.
"""

from __future__ import annotations

import difflib
import errno
import importlib
import inspect
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any

import yaml

from bigmodel import UsageError
from bigmodel.utils.exceptions import error_chain
from bigmodel.utils.hub import HubUnavailableError


def import_class(class_path: str):
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def init_parameters(cls) -> set[str]:
    return {p for c in cls.__mro__ if "__init__" in vars(c) for p in inspect.signature(c.__init__).parameters}


def init_default(cls, name: str) -> Any:
    """The default of ``cls``'s init argument ``name``, from the first class in its MRO whose ``__init__`` names it;
    ``inspect.Parameter.empty`` when it has none."""
    for c in cls.__mro__:
        parameter = inspect.signature(c.__init__).parameters.get(name) if "__init__" in vars(c) else None
        if parameter is not None:
            return parameter.default
    return inspect.Parameter.empty


USER_ERRORS = (ValueError, FileNotFoundError, HubUnavailableError, FloatingPointError)
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # bigmodel/, every layer


def own_error(err: BaseException) -> BaseException | None:
    """The first error in the chain that bigmodel itself raised about the user's input (or any ``UsageError``).

    jsonargparse wraps an error raised in a class's ``__init__`` in a multi-line report; the chain keeps ours.
    """
    for e in error_chain(err):
        tb = e.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if isinstance(e, UsageError) or (
                isinstance(e, USER_ERRORS) and tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR)):
            return e
    return None


_NOISE = ("Does not validate", "Subtypes:", "Errors:", "Given value", "Expected a <class 'NoneType'>")


_LITERAL = re.compile(r"typing\.Literal\[([^\]]*)\]")
_NONE_WORDS = ("none", "null", "off", "no", "false", "0", "")


def choice_message(text: str) -> str | None:
    """A value outside a ``Literal`` option's choices as ``model.init_args.quantize: 'none' is not one of
    ['int8']; ...``; for an ``Optional[Literal]`` it says that null (unquoted) is YAML's None, which 'none' is not.
    None when the innermost key's type is not made of Literals (and None) only."""
    keys = list(re.finditer(r'Parser key "([\w.]+)":', text))
    if not keys:
        return None
    path = keys[0][1]
    for previous, key in zip(keys, keys[1:]):  # a key after a class_path is one of that class's init_args
        path += (".init_args." if "class_path" in text[previous.end(): key.start()] else ".") + key[1]
    tail = text[keys[-1].end():]
    union = re.match(r"\s*Does not validate[^\n]*\n\s*Subtypes: \[([^\n]*)\]\n", tail)
    if union:  # Optional[Literal[...]] or a Union of Literals: the value is on the key's 'Given value' line
        types, given = union[1], re.search(r"Given value: ([^\n]*)", tail)
        if given is None or _LITERAL.sub("", types).replace("<class 'NoneType'>", "").strip(" ,"):
            return None
        literals, value, optional = _LITERAL.findall(types), given[1], "NoneType" in types
    else:
        single = re.match(r"\s*Expected a typing\.Literal\[([^\]]*)\]\. Got value: ([^\n]*)", tail)
        if single is None:
            return None
        literals, value, optional = [single[1]], single[2], False
    choices = list(dict.fromkeys(c.strip().strip("'\"") for group in literals for c in group.split(",")))
    message = f"{path}: {value!r} is not one of {choices}"
    if optional and value.strip().lower() in _NONE_WORDS:
        return f"{message}; use null to switch it off ({value!r} is a string; null, unquoted, is YAML's None)"
    close = difflib.get_close_matches(value, choices, n=1)
    return message + (" or null" if optional else "") + (f"; did you mean '{close[0]}'?" if close else "")


def parse_error_message(text: str) -> str:
    """jsonargparse's multi-line report -> one line, with a 'did you mean' for a misspelled option or choice."""
    lines = [line.strip().removeprefix("- ") for line in text.splitlines() if line.strip()]
    if not lines:
        return "bad arguments"
    choice = choice_message(text)
    if choice is not None:
        return choice
    details = [line for line in lines[1:] if not line.startswith(_NOISE)]
    message = " ".join([lines[0]] + details).replace(": :", ":").replace(":: ", ": ")
    option = re.search(r"Option '(\w+)' is not accepted", text)
    class_path = re.search(r"class_path '([\w.]+)'", text)
    if option and class_path:
        try:
            accepted = init_parameters(import_class(class_path[1]))
            close = difflib.get_close_matches(option[1], sorted(accepted - {"self", "args", "kwargs"}), n=1)
            if close:
                message += f"; did you mean '{close[0]}'?"
        except (ImportError, AttributeError, ValueError, TypeError):
            pass
    return message


def unknown_option_hint(text: str, options: list[str]) -> str:
    """``; did you mean '--trainer.max_epochs'?`` for an ``unrecognized arguments: --trainer.max_epoch 3`` report,
    from the command's own options of the same group (abbreviations are off, so a prefix is an unknown option
    too: one of the options it begins, else the closest name); '' when none is close."""
    found = re.search(r"unrecognized arguments: (--[\w.-]+)", text)
    if found is None:
        return ""
    group, _, name = found[1].rpartition(".")
    names = [o[len(group) + 1:] if group else o for o in options if o.startswith(f"{group}." if group else "--")]
    names = [n for n in names if "." not in n]
    starting = [n for n in names if n.startswith(name)]
    close = difflib.get_close_matches(name, starting or names, n=1, cutoff=0 if starting else 0.6)
    return f"; did you mean '{group + '.' if group else ''}{close[0]}'?" if close else ""


_OS_HINTS = {
    errno.ENOSPC: "free space there, or write the run elsewhere (--trainer.logger.init_args.save_dir)",
    errno.EDQUOT: "free space in your quota, or write the run elsewhere (--trainer.logger.init_args.save_dir)",
    errno.EROFS: "write the run to a writable disk (--trainer.logger.init_args.save_dir)",
    errno.EACCES: "fix the permissions, or use a directory you can write (--trainer.logger.init_args.save_dir)",
    errno.EPERM: "fix the permissions, or use a directory you can write (--trainer.logger.init_args.save_dir)",
    errno.ENOTDIR: "a part of the path is a file, not a directory: choose another path",
    errno.EISDIR: "it is a directory: give a file path",
    errno.ENAMETOOLONG: "choose a shorter path",
}


def os_error_message(error: BaseException) -> str | None:
    """Disk and permission failures (full, read-only, not allowed) as one line naming the path; None for others.
    Checkpoints are written to a temporary file and swapped in, so such a failure leaves the previous ones whole."""
    err = next((e for e in error_chain(error) if isinstance(e, OSError) and e.errno in _OS_HINTS), None)
    if err is None:
        return None
    where = f" {err.filename!r}" if err.filename else ""
    return f"cannot use{where}: {err.strerror or os.strerror(err.errno)}; {_OS_HINTS[err.errno]}"


def check_config_files(args: list[str]) -> None:
    """The ``-c`` files, read as a user would check them: a directory, a tab in the indentation or a file that is
    not a mapping of settings get a message in those words (the YAML parser's own is about tokens)."""
    paths = [b for a, b in zip(args, args[1:]) if a in ("-c", "--config")]
    paths += [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    for path in paths:
        if os.path.isdir(path):
            found = sorted(str(p) for p in Path(path).glob("*.yaml"))[:3]
            raise ValueError(f"config {path!r} is a directory; give a YAML file" +
                             (f" (there: {', '.join(found)})" if found else ""))
        if not os.path.isfile(path):
            continue  # jsonargparse says 'File does not exist'
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"config {path!r} is not a UTF-8 text file ({err.reason}); give a YAML file") from None
        for number, line in enumerate(text.splitlines(), 1):
            if line[: len(line) - len(line.lstrip())].count("\t"):
                raise ValueError(
                    f"config {path!r} line {number} is indented with a tab; YAML indents with spaces only: "
                    "replace the tab with spaces"
                )
        try:
            content = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ValueError(f"config {path!r} is not valid YAML at{where}: {problem}") from None
        if content is not None and not isinstance(content, dict):
            raise ValueError(
                f"config {path!r} holds a {type(content).__name__}, not a mapping of settings; a config looks like "
                "'trainer: {...}', 'model: {...}', 'data: {...}' at the top level"
            )


def quiet_output() -> None:
    """What a terminal user reads: warnings as one line (no source line that looks like a traceback), without
    Lightning's advertising tips and an upstream deprecation it prints on every command."""
    warnings.formatwarning = lambda message, category, *rest, **kw: f"{category.__name__}: {message}\n"
    warnings.filterwarnings("ignore", message=r".*LeafSpec.* is deprecated")

    class _NoTips(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not str(record.msg).startswith("💡 Tip")

    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoTips())


def user_message(err: BaseException) -> str | None:
    """The one line for an error about the user's input or machine; None for a bug (the traceback is shown)."""
    ours = own_error(err)
    if ours is not None:
        return " ".join(str(ours).split()) if not isinstance(ours, KeyError) else str(ours.args[0])
    if os_error_message(err) is not None:
        return os_error_message(err)
    from lightning.pytorch.utilities.exceptions import MisconfigurationException  # (here: `results` needs no Lightning)

    if isinstance(err, MisconfigurationException) or _trainer_setting_error(err):
        return " ".join(str(err).split())  # Lightning's own word on a setting: a monitor typo, FSDP on a CPU
    return None


# where Lightning checks the accelerator, devices, strategy and precision, and the loop settings against the data
# (``val_check_interval`` beyond the epoch's batches)
_SETTING_CHECKS = (os.path.join("connectors", "accelerator_connector.py"), os.path.join("accelerators", ""),
                   os.path.join("loops", "fit_loop.py"))


def _trainer_setting_error(err: BaseException) -> bool:
    """A ValueError/TypeError raised where Lightning checks a setting (``_SETTING_CHECKS``)."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = tb.tb_frame.f_code.co_filename if tb is not None else ""
    return (isinstance(err, (ValueError, TypeError)) and f"{os.sep}lightning{os.sep}" in where
            and any(check in where for check in _SETTING_CHECKS))


PEER_LOST = ("closed by peer", "reset by peer")  # gloo's words when another process of the run has exited


class OtherRankFailed(Exception):
    """This process of a DDP run stopped because another one failed: ``exit_code`` is that one's; ``say`` is False
    when it printed its own one-line error already (so the command's last line stays that error)."""

    def __init__(self, message: str, exit_code: int, say: bool = True) -> None:
        super().__init__(message)
        self.exit_code, self.say = exit_code, say


def after_rank_failure(trainer: Any, err: BaseException) -> OtherRankFailed | None:
    """What a failed DDP process does about the others, so that the command ends on the failing rank's one line
    (not a traceback of a collective whose peer had gone, printed by every other rank, after the command returned):
    a collective that failed because another process exited becomes ``OtherRankFailed`` (in the process that
    launched the others: with the exit code of the one that failed, which it waits for); a process that failed of
    its own error ends the processes it launched, which would wait for it in a collective and then print that."""
    import signal
    import subprocess
    from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    launcher = getattr(getattr(trainer, "strategy", None), "launcher", None)
    procs: list[subprocess.Popen] = list(launcher.procs) if isinstance(launcher, _SubprocessScriptLauncher) else []
    if procs:  # Lightning's observer of that list would SIGKILL this process once one of them has exited non-zero
        launcher.procs.clear()
    if not _lost_peer(err):
        for proc in procs:
            proc.send_signal(signal.SIGKILL)  # (one that already exited is skipped)
            proc.wait()
        return None
    if not procs:  # a rank that the launcher started, or one started by torchrun, SLURM, another node
        rank = getattr(trainer, "global_rank", "?")
        return OtherRankFailed(f"rank {rank} stopped: another process of this DDP run failed; its output says why", 1)
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=30))
        except subprocess.TimeoutExpired:
            codes.append(0)
    rank, code = next(((r, c) for r, c in enumerate(codes, 1) if c), (None, 1))
    code = code if code > 0 else 128 - code  # killed by a signal: the shell's status for it
    failed = f"rank {rank}" if rank is not None else "another process"
    return OtherRankFailed(f"{failed} of this DDP run failed (exit status {code}; its output is above); every rank "
                           "stopped", code, say=code != 2)


def _lost_peer(err: BaseException) -> bool:
    """A collective of a DDP run that failed because another of its processes exited."""
    import torch.distributed as dist

    return (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
            and any(isinstance(e, RuntimeError) and any(p in str(e).lower() for p in PEER_LOST)
                    for e in error_chain(err)))
