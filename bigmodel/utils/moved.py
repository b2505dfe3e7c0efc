"""Module paths from before the package had layers (December 2026), still importable: run configs, sweep summaries
and checkpoints store class paths such as ``bigmodel.checkpoint_io.AtomicCheckpointIO`` or
``bigmodel.monitoring.ProgressLog``, and ``python -m bigmodel.bench`` is in people's notes. An old name imports the
module that lives at the new path -- the same module object, so classes, ``isinstance`` and monkeypatching agree --
and ``python -m`` with an old name runs the new module. New code imports the new paths."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

MOVED = {
    "bigmodel.seeding": "bigmodel.utils.seeding",
    "bigmodel.hub": "bigmodel.utils.hub",
    "bigmodel.visuals": "bigmodel.utils.figures",
    "bigmodel.checkpoint_io": "bigmodel.run.checkpoint_io",
    "bigmodel.callbacks": "bigmodel.run.callbacks",
    "bigmodel.monitoring": "bigmodel.run.monitoring",
    "bigmodel.stopping": "bigmodel.run.stopping",
    "bigmodel.errors": "bigmodel.run.errors",
    "bigmodel.runs": "bigmodel.run.directory",
    "bigmodel.cli": "bigmodel.commands.cli",
    "bigmodel.sweep": "bigmodel.commands.sweep",
    "bigmodel.results": "bigmodel.commands.results",
    "bigmodel.compare": "bigmodel.commands.compare",
    "bigmodel.export": "bigmodel.commands.export",
    "bigmodel.bench": "bigmodel.commands.bench",
    "bigmodel.bench_lengths": "bigmodel.commands.bench.lengths",
    "bigmodel.bench_suite": "bigmodel.commands.bench.suite",
    # the bench's tools, one module each (December 2026)
    "bigmodel.commands.bench_lengths": "bigmodel.commands.bench.lengths",
    "bigmodel.commands.bench_suite": "bigmodel.commands.bench.suite",
    # within nn: checkpoints record a backbone as type(net).__module__ (bigmodel.nn.models.SequenceClassifier)
    "bigmodel.nn.models": "bigmodel.nn.text",
    "bigmodel.nn.loading": "bigmodel.nn.convert",
    "bigmodel.data.image_sources": "bigmodel.data.sources.images",
    "bigmodel.data.builtin": "bigmodel.data.sources.builtin",
}


def new_name(name: str) -> str | None:
    """The current path of a moved module (or of a module inside a moved package); None when it did not move."""
    for old, new in MOVED.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old):]
    return None


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        target_name = new_name(fullname)
        if target_name is None:
            return None
        real = importlib.util.find_spec(target_name)
        if real is None:
            return None
        spec = importlib.machinery.ModuleSpec(fullname, self, origin=real.origin, is_package=real.submodule_search_locations is not None)
        spec.loader_state = target_name
        return spec

    def create_module(self, spec) -> ModuleType:
        module = importlib.import_module(spec.loader_state)  # the module itself, not a copy
        spec.loader_state = (spec.loader_state, module.__spec__)
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run (it ran under its own name); importlib has just set ``__spec__`` to the alias's, so the
        module gets its own back."""
        module.__spec__ = module.__spec__.loader_state[1]

    def get_code(self, fullname: str):
        """``python -m <old name>``: runpy asks for the code and runs it as ``__main__``."""
        target_name = new_name(fullname)
        return importlib.util.find_spec(target_name).loader.get_code(target_name)


_ALIAS = _Alias()


def install() -> None:
    if _ALIAS not in sys.meta_path:
        sys.meta_path.insert(0, _ALIAS)  # before any finder that might still see an old file
