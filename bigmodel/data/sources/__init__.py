"""Where data comes from: one module per kind of source, read the same way.

- ``text``: a Hugging Face hub name or local .txt/.csv/.tsv/.json(l)/.parquet files -> ``datasets.DatasetDict``
- ``images``: digits (offline) or a torchvision set -> ``TensorSplits``; an ``ImageFolder`` tree -> split folders
- ``image_text``: digits with generated captions, a CSV of ``path,caption``, or a hub / saved dataset ->
  ``{split: CaptionedSplit}``
- ``builtin``: offline text made from ``pydoc_data`` -> files, which ``text`` reads (``dataset: builtin:<name>``)

The pattern: a reader is a plain function (``load_source``, ``load_local``, ``load_hub``, ``load_digits_splits``,
``load_torchvision_splits``, ``load_digits``, ``load_captioned``, ...). It takes where the data is (a name, a path,
globs) and the options that say how to read it (configuration, column names), and returns the raw splits by name
(``train`` / ``validation`` / ``test``, ``predict`` for files to label; a split the source lacks is absent or
None), with what the source knows about itself beside them (class names, pixel statistics). It does not tokenise,
transform or batch: that is the DataModule's. A missing validation split is held out by the DataModule's rule (``ensure_validation``, or
``DataModule.hold_out`` passed in as ``hold_out``), whose fraction and seed are DataModule settings.

Errors: bad input is a one-line ``ValueError`` or ``FileNotFoundError`` naming the file (and line) and the option
that fixes it (``data.init_args.<option>``). Every hub name goes through ``text.load_hub``: with the Hub
unreachable and ``HF_HUB_OFFLINE`` unset it raises ``bigmodel.utils.hub.HubUnavailableError`` at once (no
retries), its message saying how to give the data locally instead (each kind its own hint). A download that cannot
be done (torchvision's sets) is a ``ValueError`` naming ``data_dir`` and the offline alternative.

The package's own names are ``text``'s, as when ``bigmodel.data.sources`` was that one module
(``from bigmodel.data.sources import load_source, default_cache_dir`` still works);
``bigmodel.data.image_sources`` and ``bigmodel.data.builtin`` are ``images`` and ``builtin`` under their old names
(``bigmodel/utils/moved.py``).
"""

from __future__ import annotations

from typing import Any

from bigmodel.data.sources import read_errors, text
from bigmodel.data.sources.text import (BUILDERS, HEADERLESS_HINT, Files, blank_rows, check_columns, ensure_validation,
                                        expand_files, load_hub, load_local, load_source, looks_like_data, not_utf8,
                                        read_lines)
from bigmodel.utils.hub import HubUnavailableError, default_cache_dir

__all__ = ["BUILDERS", "HEADERLESS_HINT", "Files", "HubUnavailableError", "blank_rows", "check_columns",
           "default_cache_dir", "ensure_validation", "expand_files", "load_hub", "load_local", "load_source",
           "looks_like_data", "not_utf8", "read_lines"]


def __getattr__(name: str) -> Any:
    """Any other name the one-module ``sources`` had (its helpers and imports) is ``text``'s, or, for what reports a
    file that cannot be read, ``read_errors``' (``_read_error`` is its ``read_error``)."""
    for module in (text, read_errors):
        if hasattr(module, name):
            return getattr(module, name)
    if name == "_read_error":
        return read_errors.read_error
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
