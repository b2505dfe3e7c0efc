import pytest

from bigmodel.data import TextClassificationDataModule
from bigmodel.data.hub import HubUnavailableError
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
    with pytest.raises(ValueError, match=r"test has label ids \[5\] outside 0..1"):
        dm.setup("test")


def test_hub_name_without_network_says_how_to_use_local_files(monkeypatch, tokenizer_dir):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    from bigmodel.data import hub

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
