"""Fail fast and clearly when a Hugging Face Hub name is used without network.

Without ``HF_HUB_OFFLINE=1`` the hub clients retry for about 24 s before failing; a 2 s socket probe tells first.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse


class HubUnavailableError(RuntimeError):
    pass


def is_local(path: str) -> bool:
    return os.path.exists(os.path.expanduser(path))


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
