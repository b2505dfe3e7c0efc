import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_terminal_summary(terminalreporter) -> None:
    """Trained numbers in tests depend on the CPU's kernels and thread count: say which ran them."""
    import torch

    terminalreporter.write_line(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
                                f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs")


@pytest.fixture(autouse=True, scope="session")
def _isolated_caches(tmp_path_factory):
    """Tests write tokenizers and built-in datasets to a private cache, never to ~/.cache."""
    os.environ.setdefault("BIGMODEL_CACHE", str(tmp_path_factory.mktemp("bigmodel-cache")))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="session")
def _terminal_signals():
    """The signal dispositions of a command typed at a terminal, whatever started pytest: under ``nohup`` SIGHUP
    is ignored and in a script's background job SIGINT is, and a stop that respects an ignored signal (as fits and
    sweeps do) would not stop the tests that send it. Restored at the end."""
    import signal

    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGHUP: signal.SIG_DFL}
    saved = {signum: signal.signal(signum, handler) for signum, handler in defaults.items()}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.fixture(scope="session")
def pydoc_text(tmp_path_factory) -> Path:
    """Real English text (CPython's reference topics), one paragraph per line."""
    from bigmodel.data.sources import builtin

    return Path(builtin.materialise("pydoc", tmp_path_factory.mktemp("pydoc"))["train"][0])


def shared_data(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (development data beside the project)")
    return path


@pytest.fixture(scope="session")
def mlm_checkpoint(tmp_path_factory, pydoc_text) -> str:
    """Three steps of bigmodel's own MLM task on real text: a checkpoint (with its tokenizer) to start tasks from."""
    from bigmodel.commands.cli import BigModelCLI
    from tests.test_cli import mlm_config, write_yaml

    tmp = tmp_path_factory.mktemp("mlm")
    BigModelCLI(args=["fit", "-c", write_yaml(tmp / "mlm.yaml", mlm_config(tmp, pydoc_text, max_steps=3,
                                                                            limit_val_batches=1))])
    return str(tmp / "runs" / "mlm" / "checkpoints" / "last.ckpt")
