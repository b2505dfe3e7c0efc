import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _isolated_caches(tmp_path_factory):
    """Tests write tokenizers and built-in datasets to a private cache, never to ~/.cache."""
    os.environ.setdefault("BIGMODEL_CACHE", str(tmp_path_factory.mktemp("bigmodel-cache")))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def pydoc_text(tmp_path_factory) -> Path:
    """Real English text (CPython's reference topics), one paragraph per line."""
    from bigmodel.data import builtin

    return Path(builtin.materialise("pydoc", tmp_path_factory.mktemp("pydoc"))["train"][0])


def shared_data(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (development data beside the project)")
    return path
