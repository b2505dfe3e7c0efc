"""``bigmodel.data.sources``: one package of source readers, one module per kind. The names the one-module
``sources`` had still import from the package, as the same objects (user code and notebooks import them)."""

import pytest

# every top-level name of bigmodel/data/sources.py before it became a package (helpers and imports included)
ONE_MODULE_NAMES = [
    "glob", "os", "re", "Path", "np", "pa", "pc", "Dataset", "DatasetDict", "load_dataset", "DatasetGenerationError",
    "CastError", "error_chain", "HubUnavailableError", "hub_offline_mode", "hub_reachable", "offline_message",
    "BUILDERS", "Files", "HEADERLESS_HINT", "expand_files", "load_local", "_load_split", "not_utf8", "read_lines",
    "_read_error", "_columns", "_first_unreadable", "looks_like_data", "check_columns", "blank_rows", "load_hub",
    "load_source", "ensure_validation",
]


def test_every_name_of_the_one_module_sources_is_the_text_readers():
    import bigmodel.data.sources as sources
    from bigmodel.data.sources import read_errors, text

    for name in ONE_MODULE_NAMES:  # what reports a file that cannot be read moved on to read_errors
        home = text if hasattr(text, name) else read_errors
        assert getattr(sources, name) is getattr(home, name.replace("_read_error", "read_error")), name
    from bigmodel.data.sources import builtin, default_cache_dir
    from bigmodel.utils.hub import default_cache_dir as hub_cache_dir

    assert default_cache_dir is hub_cache_dir and builtin.__name__ == "bigmodel.data.sources.builtin"
    with pytest.raises(AttributeError, match="'bigmodel.data.sources' has no attribute 'load_everything'"):
        sources.load_everything  # noqa: B018



def test_a_dataset_with_local_files_too_is_refused_rather_than_reading_only_one(tmp_path):
    """A named dataset brings its own splits: files given beside it were silently ignored."""
    from bigmodel.data.sources.text import load_source

    path = tmp_path / "test.txt"
    path.write_text("held out\n")
    with pytest.raises(ValueError, match=r"^data.init_args.dataset 'builtin:pydoc' brings its own splits, so "
                                         r"test_files would be ignored: set dataset: null to read the files, or "
                                         r"remove the files$"):
        load_source("builtin:pydoc", None, {"train": None, "validation": None, "test": str(path)}, tmp_path)


def test_a_byte_order_mark_is_not_read_as_text_in_any_file_type(tmp_path):
    """Windows editors start UTF-8 files with a BOM: .txt rows kept it as the first character of each file's first
    line (a byte-level tokenizer encodes it as three tokens), where .csv/.tsv/.jsonl and read_lines drop it."""
    from bigmodel.data.sources.text import load_local, read_lines

    bom = "\ufeff"
    files = {"a.txt": "first line\nsecond line\n", "b.txt": "third line\n",
             "t.csv": "text,label\nfirst line,pos\n", "t.tsv": "text\tlabel\nfirst line\tpos\n",
             "t.jsonl": '{"text": "first line", "label": "pos"}\n'}
    for name, content in files.items():
        (tmp_path / name).write_text(bom + content, encoding="utf-8")
    corpus = load_local({"train": str(tmp_path / "*.txt")})["train"]
    assert corpus["text"] == ["first line", "second line", "third line"]
    for name in ("t.csv", "t.tsv", "t.jsonl"):
        assert load_local({"train": str(tmp_path / name)})["train"][0] == {"text": "first line", "label": "pos"}
    assert read_lines([str(tmp_path / "a.txt")], "predict") == ["first line", "second line"]
