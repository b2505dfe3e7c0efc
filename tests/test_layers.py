"""The package's layers, checked from its imports: doors open one way (README, "Layout"). A module may import its
own layer and the layers below it, never one above -- lazy imports inside functions included, so a shortcut cannot
hide in a function body. The pure-PyTorch layers never import Lightning."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bigmodel"

# bottom to top; the package root (UsageError, version) sits with the foundations, the `bigmodel` entry point on top
LAYERS = ["utils", "nn", "data", "tasks", "run", "commands"]
RANK = {name: i for i, name in enumerate(LAYERS)} | {"__init__": 0, "__main__": len(LAYERS)}
PURE_TORCH = ("utils", "nn")  # model code that runs without Lightning


def module_name(path: Path) -> str:
    return ".".join(("bigmodel",) + path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")


def layer(module: str) -> str:
    """``bigmodel.run.monitoring`` -> ``run``; ``bigmodel`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(module: str, source: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, imported module) for every import statement, at any depth."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            name = node.module or ""
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[: len(module.split(".")) - node.level + is_package]
                name = ".".join(base + ([node.module] if node.module else []))
            # ``from bigmodel import errors`` imports a module: the lower-case names are modules there
            found += [(node.lineno, f"{name}.{a.name}" if name == "bigmodel" and a.name.islower() else name)
                      for a in node.names]
    return sorted(found)


def violations(module: str, source: str, is_package: bool = False) -> list[str]:
    own, found = layer(module), []
    for line, name in imports(module, source, is_package):
        if name == "bigmodel" or name.startswith("bigmodel."):
            target = layer(name)
            if target not in RANK:  # bigmodel.monitoring and the like: utils/moved.py keeps them for old configs
                found.append(f"{module} line {line}: imports {name}, a path that moved (bigmodel/utils/moved.py)")
            elif RANK[target] > RANK[own]:
                found.append(f"{module} line {line}: imports {name} ({target} is above {own})")
        elif own in PURE_TORCH and name.split(".")[0] in ("lightning", "pytorch_lightning"):
            found.append(f"{module} line {line}: imports {name} ({own} is pure PyTorch)")
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_is_in_a_layer():
    outside = [module_name(p) for p in MODULES if layer(module_name(p)) not in RANK]
    assert not outside, f"modules outside the layers {LAYERS}: {outside} -- put each in a layer (README, Layout)"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    found = violations(module_name(path), path.read_text(), path.name == "__init__.py")
    assert not found, "\n".join(found)


def test_the_check_catches_what_it_should():
    """The checker itself can fail: an upward import (also lazy, also relative) and Lightning in model code."""
    source = "import torch\ndef f():\n    from bigmodel.tasks import MLMTask\nfrom ..run import callbacks\nimport lightning as L\n"
    found = violations("bigmodel.nn.encoder", source)
    assert [f.split(": ")[1] for f in found] == ["imports bigmodel.tasks (tasks is above nn)",
                                                 "imports bigmodel.run (run is above nn)",
                                                 "imports lightning (nn is pure PyTorch)"]
    assert violations("bigmodel.commands.cli", source.replace("..run", "..nn")) == []
    assert violations("bigmodel.tasks.base", "from bigmodel import seeding\n") == [
        "bigmodel.tasks.base line 1: imports bigmodel.seeding, a path that moved (bigmodel/utils/moved.py)"]
