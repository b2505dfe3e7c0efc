"""bigmodel: a hand-written Transformer encoder, BERT-style pretraining and fine-tuning, run by Lightning's CLI."""

__version__ = "0.1.0"


class UsageError(ValueError):
    """Bad input -- a setting, a file, data -- raised from any code, bigmodel's or an extension's: the ``bigmodel``
    command prints its message as one line (``bigmodel: error: ...``, exit status 2) instead of a traceback. Say
    what is wrong and the option that fixes it. A plain ``ValueError`` gets this only when bigmodel raises it:
    raised elsewhere it may be a bug, which keeps its traceback. Defined here, importing nothing, so that model code
    without Lightning can raise it too."""


__all__ = ["UsageError", "__version__"]

from bigmodel.utils import moved  # noqa: E402 (after UsageError: old module paths, see utils/moved.py)

moved.install()
