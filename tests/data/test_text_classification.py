import torch
import pytest

from bigmodel.data import TextClassificationDataModule
from bigmodel.utils.hub import HubUnavailableError
from bigmodel.data.tokenizer import train_wordpiece
from tests.conftest import shared_data
from tests.helpers import write_table


@pytest.fixture(scope="module")
def tokenizer_dir(pydoc_text, tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    train_wordpiece(pydoc_text.read_text().splitlines(), vocab_size=700).save_pretrained(path)
    return str(path)


def _write(path, rows, header=("review", "sentiment")):
    return write_table(path, rows, header)


def test_string_labels_columns_and_padding(tmp_path, tokenizer_dir):
    rows = [(f"the object {i} is {'good' if i % 2 else 'bad'}", "pos" if i % 2 else "neg") for i in range(40)]
    train = _write(tmp_path / "train.csv", rows)
    test = _write(tmp_path / "test.csv", rows[:10])
    dm = TextClassificationDataModule(tokenizer_dir, train_files=train, test_files=test, text_column="review",
                                      label_column="sentiment", batch_size=8)
    assert dm.num_classes == 2 and dm.class_names == ["neg", "pos"]
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 38 and len(dm.datasets["validation"]) == 2  # 5 % held out
    assert "test" not in dm.datasets  # each stage tokenises only its own splits
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert batch["labels"].tolist() == [0, 1] * 4
    assert batch["input_ids"][:, 0].eq(dm.tokenizer.cls_token_id).all()


def test_text_pairs_get_segment_ids(tmp_path, tokenizer_dir):
    rows = [(f"is the object {i} hashable", f"object {i} defines __hash__", i % 2) for i in range(20)]
    train = _write(tmp_path / "pairs.csv", rows, header=("premise", "hypothesis", "label"))
    dm = TextClassificationDataModule(tokenizer_dir, train_files=train, text_column="premise",
                                      text_pair_column="hypothesis", batch_size=4)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["token_type_ids"].shape == batch["input_ids"].shape and batch["token_type_ids"].max() == 1


def test_bad_columns_and_labels_are_explained(tmp_path, tokenizer_dir):
    train = _write(tmp_path / "train.csv", [("a text", 0), ("b text", 1)] * 5)
    with pytest.raises(ValueError, match=r"text column 'text' not found; columns are \['review', 'sentiment'\]"):
        TextClassificationDataModule(tokenizer_dir, train_files=train, label_column="sentiment")
    test = _write(tmp_path / "test.csv", [("c text", 5)])
    dm = TextClassificationDataModule(tokenizer_dir, train_files=train, test_files=test, text_column="review",
                                      label_column="sentiment")
    with pytest.raises(ValueError, match=r"test file '.*test.csv' has label ids \[5\] outside 0..1"):
        dm.setup("test")
    ids = write_table(tmp_path / "ids.csv", [(i, i % 2) for i in range(10)])  # the text column holds numbers
    with pytest.raises(ValueError, match=r"^text column 'text' of the train split holds int64 values, not texts; set "
                                         r"data.init_args.text_column to a column of texts \(here: \[\]\)$"):
        TextClassificationDataModule(tokenizer_dir, train_files=ids)  # (it failed in the tokenizer)


def test_a_validation_class_absent_from_training_names_the_file_and_the_fix(tmp_path, tokenizer_dir):
    train = write_table(tmp_path / "train.csv", [("a b", "neg"), ("c d", "pos")] * 4)
    val = write_table(tmp_path / "val.csv", [("e f", "World"), ("g h", "pos")])
    dm = TextClassificationDataModule(tokenizer_dir, train_files=train, validation_files=val)
    with pytest.raises(ValueError, match=r"validation file '.*val.csv' has labels \['World'\] that are not among the "
                                         r"training classes \['neg', 'pos'\]; add training examples of them, or list "
                                         r"every class in data.init_args.label_names"):
        dm.setup("fit")
    dm = TextClassificationDataModule(tokenizer_dir, train_files=train, validation_files=val,
                                      label_names=["neg", "pos"])
    with pytest.raises(ValueError, match=r"not among data.init_args.label_names \['neg', 'pos'\]; add them to "
                                         r"data.init_args.label_names, or correct those labels"):
        dm.setup("fit")


def test_spaces_around_a_label_name_do_not_make_it_another_class(tmp_path, tokenizer_dir):
    """'pos ' beside 'pos' (a space typed after it or after a CSV comma) was a fourth class of two, silently."""
    train = write_table(tmp_path / "train.csv", [("a b", "neg"), ("c d", "pos "), ("e f", " neg"), ("g h", "pos")] * 4)
    val = tmp_path / "val.tsv"
    val.write_text("text\tlabel\ni j\tpos \nk l\tneg\n")
    dm = TextClassificationDataModule(tokenizer_dir, train_files=train, validation_files=str(val))
    assert dm.class_names == ["neg", "pos"]
    dm.setup("fit")
    assert dm.datasets["train"]["labels"] == [0, 1, 0, 1] * 4 and dm.datasets["validation"]["labels"] == [1, 0]


def test_quoted_class_ids_are_ids_in_every_split(tmp_path, tokenizer_dir):
    """JSON's "2" beside a CSV's 2: as names the classes sorted '0', '1', '10', '11', '2', ..., so the CSV's id 2 was
    class '10' while the JSON's "2" was class '2', silently."""
    lines = tmp_path / "train.jsonl"
    lines.write_text("".join(f'{{"text": "text {i}", "label": "{i % 12}"}}\n' for i in range(24)))
    val = write_table(tmp_path / "val.csv", [(f"text {i}", i) for i in range(12)])
    dm = TextClassificationDataModule(tokenizer_dir, train_files=str(lines), validation_files=val)
    assert dm.class_names == [str(i) for i in range(12)]
    dm.setup("fit")
    assert dm.datasets["train"]["labels"] == list(range(12)) * 2 and dm.datasets["validation"]["labels"] == list(range(12))


def test_text_that_is_not_utf8_names_the_file_the_line_and_the_fix(tmp_path, tokenizer_dir):
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\nplain words,0\ncafé au lait,1\n".encode("cp1252"))
    with pytest.raises(ValueError, match=r"train file '.*latin.csv' is not UTF-8 text: line 3 has the byte 0xe9 "
                                         r"\('é' in Latin-1/Windows-1252\); re-save the file as UTF-8"):
        TextClassificationDataModule(tokenizer_dir, train_files=str(latin))
    lines = tmp_path / "latin.jsonl"  # pyarrow's JSON reader kept the bytes: "Invalid UTF8 sequence", no file or line
    lines.write_bytes('{"text": "plain words", "label": 0}\n{"text": "café au lait", "label": 1}\n'.encode("cp1252"))
    with pytest.raises(ValueError, match=r"^train file '.*latin.jsonl' is not UTF-8 text: line 2 has the byte 0xe9"):
        TextClassificationDataModule(tokenizer_dir, train_files=str(lines))
    excel = tmp_path / "excel.tsv"  # Excel's "Unicode Text": was "line 1 has the byte 0xff ('ÿ' in Latin-1...)"
    excel.write_bytes("text\tlabel\nplain words\t0\nmore words\t1\n".encode("utf-16"))
    with pytest.raises(ValueError, match=r"^train file '.*excel.tsv' is UTF-16 text, not UTF-8; re-save it as UTF-8"):
        TextClassificationDataModule(tokenizer_dir, train_files=str(excel))
    texts = tmp_path / "texts.txt"
    texts.write_bytes("first text\nna\xefve second\n".encode("cp1252"))
    dm = TextClassificationDataModule(tokenizer_dir, label_names=["neg", "pos"], predict_files=str(texts))
    with pytest.raises(ValueError, match=r"predict file '.*texts.txt' is not UTF-8 text: line 2 has the byte 0xef"):
        dm.setup("predict")


def test_integer_labels_say_that_the_classes_are_named_by_number(tmp_path, tokenizer_dir, caplog):
    import logging

    train = write_table(tmp_path / "train.csv", [("a b", 0), ("c d", 1)] * 4)
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        TextClassificationDataModule(tokenizer_dir, train_files=train, validation_fraction=0.25).setup("fit")
        TextClassificationDataModule(tokenizer_dir, train_files=train, validation_fraction=0.25,
                                     label_names=["neg", "pos"]).setup("fit")
    numbered, named = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Text classification:")]
    assert "2 classes ['0', '1']; the labels are ids, so the classes are named by number: set " \
           "data.init_args.label_names to name them (prepared in" in numbered
    assert "2 classes ['neg', 'pos'] (prepared in" in named


def test_hub_name_without_network_says_how_to_use_local_files(monkeypatch, tokenizer_dir):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    from bigmodel.utils import hub

    hub.hub_reachable.cache_clear()
    with pytest.raises(HubUnavailableError, match="train_files"):
        TextClassificationDataModule(tokenizer_dir, dataset="glue", dataset_config="sst2")
    with pytest.raises(HubUnavailableError, match="save_pretrained"):
        TextClassificationDataModule("bert-base-uncased", dataset="glue")
    hub.hub_reachable.cache_clear()


def test_sst2_tsv_from_shared_data(tokenizer_dir):
    root = shared_data("sst2")
    dm = TextClassificationDataModule(tokenizer_dir, train_files=str(root / "dev.tsv"),
                                      test_files=str(root / "test.tsv"), text_column="sentence")
    assert dm.num_classes == 2
    dm.setup("test")
    assert len(dm.datasets["test"]) == 872


def test_labels_mixing_numbers_and_names_are_refused_in_any_split(tmp_path, tokenizer_dir):
    mixed = write_table(tmp_path / "mixed.csv", [("a b", "0"), ("c d", "1"), ("e f", "positive")] * 3)
    with pytest.raises(ValueError, match=r"label column 'label' mixes numbers \('0', '1' in train\) and names "
                                         r"\('positive' in train\); use one kind"):
        TextClassificationDataModule(tokenizer_dir, train_files=mixed)
    names = write_table(tmp_path / "names.csv", [("a b", "neg"), ("c d", "pos")] * 3)
    ids = write_table(tmp_path / "ids.csv", [("e f", 0), ("g h", 1)])
    with pytest.raises(ValueError, match=r"mixes numbers \('0', '1' in test\) and names \('neg', 'pos' in train\)"):
        TextClassificationDataModule(tokenizer_dir, train_files=names, test_files=ids)
    lines = tmp_path / "mixed.jsonl"  # JSON keeps the kinds apart (a Json column): it was a pyarrow traceback
    lines.write_text('{"text": "a b", "label": "neg"}\n{"text": "c d", "label": 1}\n{"text": "e f", "label": "pos"}\n')
    with pytest.raises(ValueError, match=r"mixes numbers \('1' in train\) and names \('neg', 'pos' in train\)"):
        TextClassificationDataModule(tokenizer_dir, train_files=str(lines))


def test_a_single_training_class_is_named_by_the_data_module(tmp_path, tokenizer_dir):
    train = write_table(tmp_path / "one.csv", [("a b", "pos")] * 5)
    with pytest.raises(ValueError, match=r"the training labels in column 'label' hold one value \('pos'\); .* "
                                         r"add data of the other classes, or list every class in "
                                         r"data.init_args.label_names"):
        TextClassificationDataModule(tokenizer_dir, train_files=train)
    dm = TextClassificationDataModule(tokenizer_dir, train_files=train, label_names=["neg", "pos"])
    assert dm.num_classes == 2


def test_empty_texts_are_skipped_with_a_count_and_a_missing_label_names_its_row(tmp_path, tokenizer_dir):
    train = write_table(tmp_path / "train.csv", [("a b", 0), ("", 1), ("   ", 0), ("c d", 1)] * 5)
    test = write_table(tmp_path / "test.csv", [("", ""), ("e f", 1), ("g h", 0)])
    with pytest.warns(UserWarning) as warned:
        dm = TextClassificationDataModule(tokenizer_dir, train_files=train, test_files=test, validation_fraction=0.2)
    assert [str(w.message).split(" rows of ")[0] for w in warned] == ["skipped 10 of 20", "skipped 1 of 3"]
    assert str(warned[0].message).endswith("train.csv' whose text is empty")
    dm.setup("fit")
    dm.setup("test")
    assert len(dm.datasets["train"]) + len(dm.datasets["validation"]) == 10 and dm.class_names == ["0", "1"]
    assert dm.datasets["test"]["labels"] == [1, 0]
    no_label = write_table(tmp_path / "no-label.csv", [("a b", "neg"), ("c d", "pos"), ("e f", ""), ("", "")])
    with pytest.raises(ValueError, match=r"train file '.*no-label.csv' has 1 row with a text but no 'label' label "
                                         r"\(row 3, counted from 1 below the header\)"):
        TextClassificationDataModule(tokenizer_dir, train_files=no_label)
    blank = write_table(tmp_path / "blank.csv", [("", 0), (" ", 1)])
    with pytest.raises(ValueError, match=r"every row of train file '.*blank.csv' has an empty 'text' cell"):
        TextClassificationDataModule(tokenizer_dir, train_files=blank)


def test_without_a_tokenizer_a_wordpiece_is_trained_once_on_the_training_texts(tmp_path):
    rows = [(f"the {w} object is {'good' if i % 2 else 'bad'}", i % 2) for i, w in enumerate(["list", "dict"] * 10)]
    train = write_table(tmp_path / "train.csv", rows)
    dm = TextClassificationDataModule(train_files=train, wordpiece_vocab_size=200, max_length=32)
    again = TextClassificationDataModule(tokenizer=None, train_files=train, wordpiece_vocab_size=200, max_length=32)
    assert dm.tokenizer.name_or_path == again.tokenizer.name_or_path and dm.vocab_size == len(dm.tokenizer) < 200
    assert "object" in dm.tokenizer.get_vocab() and dm.tokenizer.model_max_length == 32
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["input_ids"].max() < dm.vocab_size


def test_headerless_files_are_read_with_column_names_and_detected_without(tmp_path, tokenizer_dir):
    train = write_table(tmp_path / "train.csv", [("c d", "neg"), ("e f", "pos")] * 3, header=("a b", "pos"))
    with pytest.raises(ValueError, match=r"text column 'text' not found; columns are \['a b', 'pos'\] .* the first "
                                         r"row looks like data: if the files have no header row, set "
                                         r"data.init_args.column_names \(e.g. \[text, label\]\)"):
        TextClassificationDataModule(tokenizer_dir, train_files=train)
    dm = TextClassificationDataModule(tokenizer_dir, train_files=train, column_names=["text", "label"])
    assert len(dm.raw["train"]) + len(dm.raw["validation"]) == 7 and dm.class_names == ["neg", "pos"]
    good = write_table(tmp_path / "good.csv", [("c d", 0), ("e f", 1)] * 3)
    test = write_table(tmp_path / "test.csv", [("g h", 0)], header=("the film was fine", "1"))
    with pytest.raises(ValueError, match=r"text column 'text' not found in test file '.*test.csv': its columns are "
                                         r"\['the film was fine', '1'\], while train's are \['text', 'label'\]; give "
                                         r"every split the same columns; the first row looks like data"):
        TextClassificationDataModule(tokenizer_dir, train_files=good, test_files=test)
    other = write_table(tmp_path / "other.csv", [("g h", 0)], header=("sentence", "label"))
    with pytest.raises(ValueError, match=r"train file '.*other.csv' has columns \['sentence', 'label'\] but "
                                         r"'.*good.csv' has \['text', 'label'\]; give all train files the same columns"):
        TextClassificationDataModule(tokenizer_dir, train_files=[good, other])


def test_predict_and_test_need_only_the_tokenizer_label_names_and_their_own_files(tmp_path, tokenizer_dir):
    texts = tmp_path / "new.txt"
    texts.write_text("the object is good\n\nthe list is bad\n")
    absent = str(tmp_path / "elsewhere" / "train.csv")  # the training files are on another machine
    dm = TextClassificationDataModule(tokenizer_dir, label_names=["neg", "pos"], train_files=absent,
                                      predict_files=str(texts))
    assert dm.num_classes == 2 and dm.class_names == ["neg", "pos"] and dm._raw is None
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert batch["input_ids"].shape[0] == 2 and dm._raw is None
    test = write_table(tmp_path / "test.csv", [("the object is good", "pos"), ("the list is bad", "neg")])
    dm = TextClassificationDataModule(tokenizer_dir, label_names=["neg", "pos"], train_files=absent, test_files=test,
                                      validation_files=test)
    dm.setup("test")
    dm.setup("validate")
    assert dm.datasets["test"]["labels"] == dm.datasets["validation"]["labels"] == [1, 0]
    with pytest.raises(FileNotFoundError, match="train file .* does not exist"):
        dm.setup("fit")


def test_a_broken_jsonl_line_is_named_by_its_line_number(tmp_path, tokenizer_dir):
    """pyarrow said "in row 4": counted from 0, and within the block it parsed, not the file's line."""
    lines = [f'{{"text": "text {i}", "label": "{"pos" if i % 2 else "neg"}"}}' for i in range(8)]
    lines[4] = '{"text": "a "quoted" word", "label": "pos"}'
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"^cannot read train file '.*train.jsonl': line 5 is not valid JSON \(Expecting "
                                         r"',' delimiter at column 14\); each line of a .jsonl file is one object"):
        TextClassificationDataModule(tokenizer_dir, train_files=str(path))


def test_a_directory_or_a_broken_tsv_row_is_explained(tmp_path, tokenizer_dir):
    write_table(tmp_path / "a.csv", [("a b", 0), ("c d", 1)])
    with pytest.raises(ValueError, match=r"train file '.*' is a directory; give a file, or a glob of the files in it "
                                         r"such as '.*/\*.csv'"):
        TextClassificationDataModule(tokenizer_dir, train_files=str(tmp_path))
    tsv = tmp_path / "train.tsv"
    tsv.write_text('text\tlabel\na "quoted" word\t0\na tab\tinside\t1\n')
    with pytest.raises(ValueError, match=r"cannot read train file '.*train.tsv': line 3 has 3 fields where 2 are "
                                         r"expected; in .tsv files every tab separates fields and quote characters "
                                         r"are plain text"):
        TextClassificationDataModule(tokenizer_dir, train_files=str(tsv))


def test_cli_fits_a_classifier_without_a_tokenizer_and_its_checkpoint_carries_the_trained_one(tmp_path):
    import torch

    from bigmodel.commands.cli import BigModelCLI
    from bigmodel.data.tokenizer import load_tokenizer
    from tests.test_cli import write_yaml

    rows = [(f"the {w} object is {'good' if i % 2 else 'bad'}", i % 2) for i, w in enumerate(["list", "dict"] * 10)]
    config = {
        "trainer": {"max_steps": 1, "limit_val_batches": 1, "accelerator": "cpu", "enable_progress_bar": False,
                    "enable_model_summary": False,
                    "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                               "init_args": {"save_dir": str(tmp_path), "name": "cls"}}},
        "checkpoint": {"dirpath": str(tmp_path / "ckpt")},
        "model": {"class_path": "bigmodel.tasks.ClassificationTask", "init_args": {"encoder": "bert-tiny"}},
        "data": {"class_path": "bigmodel.data.TextClassificationDataModule",
                 "init_args": {"tokenizer": None, "train_files": write_table(tmp_path / "train.csv", rows),
                               "wordpiece_vocab_size": 300, "batch_size": 4}},
    }
    cli = BigModelCLI(args=["fit", "-c", write_yaml(tmp_path / "cls.yaml", config)])
    assert cli.trainer.global_step == 1 and cli.model.hparams.vocab_size == cli.datamodule.vocab_size < 300
    ckpt = str(tmp_path / "ckpt" / "last.ckpt")
    assert "tokenizer" in torch.load(ckpt, weights_only=True, map_location="cpu")
    assert load_tokenizer(ckpt, tmp_path / "cache").get_vocab() == cli.datamodule.tokenizer.get_vocab()


def _varied_rows(n=160):
    words = "the list dict object is good bad a very hashable tuple".split()
    return [(" ".join(words[(i * 7 + j) % len(words)] for j in range(1 + (i * 37) % 29)), i % 2) for i in range(n)]


def test_group_by_length_batches_similar_lengths_padded_to_multiples_of_8(tmp_path, tokenizer_dir):
    train = write_table(tmp_path / "train.csv", _varied_rows())

    def module(**kwargs):
        dm = TextClassificationDataModule(tokenizer_dir, train_files=train, batch_size=8, **kwargs)
        dm.setup("fit")
        return dm

    def spread(loader):
        real = [b["attention_mask"].sum(1) if "attention_mask" in b else torch.full((len(b["labels"]),),
                b["input_ids"].shape[1]) for b in loader]
        return sum(int(r.max() - r.min()) for r in real) / len(real)

    grouped, plain = module(group_by_length=True), module(pad_to_multiple_of=None)
    assert grouped.hparams.pad_to_multiple_of == 8  # the default
    shapes = [b["input_ids"].shape[1] for b in grouped.train_dataloader()]
    assert all(s % 8 == 0 for s in shapes) and len(set(shapes)) > 1
    assert any(b["input_ids"].shape[1] % 8 for b in plain.train_dataloader())
    assert spread(grouped.train_dataloader()) < spread(plain.train_dataloader()) / 5
    assert all(b["input_ids"].shape[1] % 8 == 0 for b in grouped.val_dataloader())
    first = [b["labels"].tolist() for b in grouped.val_dataloader()]
    assert first == [b["labels"].tolist() for b in plain.val_dataloader()]  # validation order unchanged


def test_padding_to_a_multiple_of_8_leaves_logits_and_real_token_states_unchanged(tmp_path, tokenizer_dir):
    from bigmodel.data.collators import ClassificationCollator
    from bigmodel.data.sampling import token_lengths
    from bigmodel.nn import EncoderConfig, SequenceClassifier

    dm = TextClassificationDataModule(tokenizer_dir, train_files=write_table(tmp_path / "t.csv", _varied_rows(16)))
    dm.setup("fit")
    lengths = token_lengths(dm.datasets["train"])
    examples = [dm.datasets["train"][i] for i, n in enumerate(lengths) if n % 8][:6]  # the multiple adds padding
    torch.manual_seed(0)
    model = SequenceClassifier(EncoderConfig.from_name("bert-tiny", vocab_size=dm.vocab_size), 2).eval()
    with torch.no_grad():
        outs = []
        for multiple in (None, 8):
            batch = ClassificationCollator(dm.tokenizer, multiple)([dict(e) for e in examples])
            logits, out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            outs.append((batch["input_ids"].shape[1], logits, out.last_hidden_state, batch["attention_mask"].bool()))
    (short, logits, hidden, mask), (long, logits8, hidden8, _) = outs
    assert long % 8 == 0 and long > short
    torch.testing.assert_close(logits8, logits, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(hidden8[:, :short][mask], hidden[mask], atol=1e-6, rtol=1e-5)


def test_the_cli_reads_group_by_length_and_pad_to_multiple_of(capsys):
    import yaml

    from bigmodel.commands.cli import BigModelCLI

    with pytest.raises(SystemExit):
        BigModelCLI(args=["fit", "-c", "experiments/finetune/sst2_bert_mini_cpu.yaml",
                          "--data.init_args.group_by_length=true", "--data.init_args.pad_to_multiple_of=null",
                          "--print_config"])
    data = yaml.safe_load(capsys.readouterr().out)["data"]["init_args"]
    assert data["group_by_length"] is True and data["pad_to_multiple_of"] is None


def test_data_help_describes_every_argument_of_every_data_module(capsys):
    """``--data.help`` shows each init argument's description, read from the class docstring's ``Args:``."""
    import re

    from jsonargparse import ArgumentParser

    import bigmodel.data as data
    from bigmodel.commands.cli import BigModelCLI

    with pytest.raises(SystemExit):
        BigModelCLI(args=["fit", "--data.help", "TextClassificationDataModule"])
    text = " ".join(capsys.readouterr().out.split())
    assert re.search(r"--data\.text_column TEXT_COLUMN the column of texts\. \(type: str, default: text\)", text)
    assert "--data.label_names LABEL_NAMES, --data.label_names+ LABEL_NAMES class names in label-id order" in text
    assert "--data.batch_size BATCH_SIZE per device;" in text  # inherited from DataModule
    for cls in (data.TextClassificationDataModule, data.CorpusDataModule, data.ImageDataModule,
                data.ImageTextDataModule):
        parser = ArgumentParser()
        parser.add_class_arguments(cls, "data")
        undescribed = [a.dest for a in parser._actions if a.dest.startswith("data.") and not (a.help or "").strip()]
        assert undescribed == [], cls.__name__
