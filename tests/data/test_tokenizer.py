import pytest

from bigmodel.data.tokenizer import SPECIAL_TOKENS, train_wordpiece


def test_trained_wordpiece_ids_follow_the_vocabulary_not_the_trainers_hash_order(pydoc_text):
    """The trainer numbers tokens in a per-process hash order; the ids must depend only on the learned tokens."""
    tok = train_wordpiece(pydoc_text.read_text().splitlines(), vocab_size=600)
    vocab = tok.get_vocab()
    ordered = sorted(vocab, key=vocab.get)
    assert ordered[:len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS.values())
    assert ordered[len(SPECIAL_TOKENS):] == sorted(ordered[len(SPECIAL_TOKENS):])
    assert len(vocab) == len(tok) == 600 and set(vocab.values()) == set(range(600))
    ids = tok("Lists are mutable sequences.")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id and tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == "lists are mutable sequences."


def test_a_checkpoints_tokenizer_appears_in_the_cache_whole_and_a_copy_cut_short_is_completed(pydoc_text, tmp_path):
    """Two processes loading one checkpoint at once must never read a half-written tokenizer directory."""
    import torch

    from bigmodel.data.tokenizer import CHECKPOINT_KEY, load_tokenizer, tokenizer_files

    tok = train_wordpiece(pydoc_text.read_text().splitlines(), vocab_size=600)
    files = tokenizer_files(tok)
    ckpt = tmp_path / "model.ckpt"
    torch.save({CHECKPOINT_KEY: files}, ckpt)
    cache = tmp_path / "cache"
    assert load_tokenizer(str(ckpt), cache).get_vocab() == tok.get_vocab()
    (entry,) = (cache / "tokenizers").iterdir()  # one directory, no temporary left beside it
    assert sorted(p.name for p in entry.iterdir()) == sorted(files)

    for name in files:  # as an older version could leave it when stopped mid-write: one file only
        if name != "tokenizer_config.json":
            (entry / name).unlink()
    assert load_tokenizer(str(ckpt), cache).get_vocab() == tok.get_vocab()
    assert [p.name for p in (cache / "tokenizers").iterdir()] == [entry.name]
    assert sorted(p.name for p in entry.iterdir()) == sorted(files)


def test_a_tokenizer_path_that_does_not_exist_says_so_not_the_hubs_repo_id_rules(tmp_path, monkeypatch):
    """Overriding only init_from leaves the tokenizer on a checkpoint path that is not there: the user must read
    that the path is missing, not Hugging Face's 'Repo id must be in the form ...'."""
    import pytest

    from bigmodel.data.tokenizer import load_tokenizer

    monkeypatch.chdir(tmp_path)
    for source in ["runs/quickstart-mlm/checkpoints/last.ckpt", "./tok", "~/no-such-folder-here/tok", "tok.ckpt"]:
        with pytest.raises(FileNotFoundError) as err:
            load_tokenizer(source, tmp_path / "cache")
        made = "; a fit of run 'quickstart-mlm' writes it: run that fit first" if source.startswith("runs/") else ""
        assert str(err.value) == (f"tokenizer {source!r} does not exist (set data.init_args.tokenizer to a tokenizer "
                                  f"directory, a bigmodel checkpoint or a hub name){made}")


def test_a_hub_tokenizer_not_in_the_cache_offline_gets_init_froms_one_line_message(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 and a hub name that was never downloaded: one line saying so and what to pass instead,
    as init_from says it -- not the hub client's paragraph about connecting to huggingface.co."""
    import pytest

    from bigmodel.data.tokenizer import load_tokenizer
    from bigmodel.utils.hub import HubUnavailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailableError) as err:
        load_tokenizer("no-such-org/no-such-tokenizer", tmp_path / "cache")
    message = str(err.value)
    assert message == ("cannot load tokenizer 'no-such-org/no-such-tokenizer': not in the Hugging Face cache "
                       "(HF_HUB_OFFLINE=1); save it where there is internet (AutoTokenizer.from_pretrained("
                       "'no-such-org/no-such-tokenizer').save_pretrained(DIR)) and pass that directory as "
                       "data.init_args.tokenizer")
    assert "\n" not in message and "huggingface.co" not in message


@pytest.mark.parametrize("module, default", [
    ("CorpusDataModule", 8192), ("TextClassificationDataModule", 8192), ("ImageTextDataModule", 1000)])
def test_wordpiece_vocab_size_beside_a_tokenizer_is_refused_and_unset_trains_the_default_size(
        module, default, pydoc_text, tmp_path, monkeypatch):
    """A size given beside a tokenizer could only be ignored (the tokenizer has its own vocabulary): one line
    naming the fix, before any data is read. Unset, the trained WordPiece keeps its documented size."""
    import bigmodel.data as data
    from tests.helpers import write_table

    cls = getattr(data, module)
    with pytest.raises(ValueError) as err:
        cls(tokenizer="my-tokenizer", wordpiece_vocab_size=4096)
    assert str(err.value) == ("wordpiece_vocab_size 4096 sizes the WordPiece trained when no tokenizer is given, but "
                              "tokenizer is 'my-tokenizer' (its own vocabulary is used): remove "
                              f"data.init_args.wordpiece_vocab_size (or set it to its default, {default}), or unset "
                              "the tokenizer")
    with pytest.raises(ValueError, match=r"^lowercase: false is for the WordPiece trained when no tokenizer is given, "
                                         r"but tokenizer is 'my-tokenizer' \(its own normaliser decides the case\): "
                                         r"remove data.init_args.lowercase \(or set it to true\), or unset the "
                                         r"tokenizer$"):
        cls(tokenizer="my-tokenizer", lowercase=False)

    class Trained(Exception):
        pass

    sizes = []

    def record(ds, columns, cache_dir, vocab_size, *args, **kwargs):
        sizes.append(vocab_size)
        raise Trained

    monkeypatch.setattr(f"{cls.__module__}.cached_wordpiece", record)
    source = {"CorpusDataModule": {"train_files": str(pydoc_text)},
              "TextClassificationDataModule": {"train_files": write_table(tmp_path / "t.csv", [("a b", 0), ("c", 1)])},
              "ImageTextDataModule": {}}[module]
    for given in ({}, {"wordpiece_vocab_size": 300}):
        with pytest.raises(Trained):
            cls(cache_dir=str(tmp_path / "cache"), **source, **given)
    assert sizes == [default, 300]
