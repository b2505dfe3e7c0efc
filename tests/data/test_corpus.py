import json

import pytest
import torch
from datasets import Dataset, DatasetDict

from bigmodel.data import CorpusDataModule
from bigmodel.data.sources.text import ensure_validation
from tests.conftest import shared_data


def test_blocks_from_local_text(pydoc_text, tmp_path):
    dm = CorpusDataModule(train_files=str(pydoc_text), wordpiece_vocab_size=800, block_size=64, batch_size=4)
    assert dm.vocab_size == 800
    dm.setup("fit")
    train, val = dm.datasets["train"], dm.datasets["validation"]
    assert len(train) > 100 and len(val) > 5
    block = train[0]["input_ids"]
    assert block.shape == (64,) and block[0] == dm.tokenizer.cls_token_id
    assert (block == dm.tokenizer.pad_token_id).sum() == 0  # chunked, no padding waste
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (4, 64) and "attention_mask" not in batch
    # the trained tokenizer is cached: a second module gets the very same vocabulary
    again = CorpusDataModule(train_files=str(pydoc_text), wordpiece_vocab_size=800, block_size=64, batch_size=4,
                             masked_positions_multiple_of=16)
    assert again.tokenizer.get_vocab() == dm.tokenizer.get_vocab()
    again.setup("fit")
    assert all(len(b["masked_positions"]) % 16 == 0 for b, _ in zip(again.val_dataloader(), range(3)))
    with pytest.raises(ValueError, match="masked_positions_multiple_of must be >= 1"):
        CorpusDataModule(train_files=str(pydoc_text), wordpiece_vocab_size=800, masked_positions_multiple_of=0)


def test_jsonl_source_and_bad_column(tmp_path, pydoc_text):
    lines = pydoc_text.read_text().splitlines()[:300]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"body": t}) + "\n" for t in lines))
    with pytest.raises(ValueError, match=r"text column 'text' not found; columns are \['body'\]"):
        CorpusDataModule(train_files=str(path))
    dm = CorpusDataModule(train_files=str(path), text_column="body", wordpiece_vocab_size=500, block_size=32)
    dm.setup("fit")
    assert dm.datasets["train"][0]["input_ids"].shape == (32,)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        CorpusDataModule(train_files=str(tmp_path / "nope.txt"))


def test_wikitext_sample_from_shared_data():
    root = shared_data("wikitext2")
    dm = CorpusDataModule(train_files=str(root / "valid.txt"), validation_files=str(root / "test.txt"),
                          test_files=str(root / "test.txt"), wordpiece_vocab_size=2000, block_size=128)
    dm.setup("fit")
    assert len(dm.datasets["train"]) > 1000 and len(dm.datasets["validation"]) > 1000
    assert "test" not in dm.datasets  # a fit does not tokenise the test split
    dm.setup("test")
    test, validation = (dm.datasets[split].with_format("arrow")["input_ids"] for split in ("test", "validation"))
    assert len(test) > 1000 and test.equals(validation)  # the same file: the same blocks


def test_validation_is_the_first_rows_of_train_one_contiguous_run_whatever_the_seed_or_objective(pydoc_text,
                                                                                                  tmp_path):
    """Without validation files a corpus holds out the first validation_fraction of its rows (Hugging Face's
    ``train[:p%]``), one contiguous run of the files' concatenation, not rows drawn by the seed: a row is a paragraph,
    and random ones would validate on paragraphs of the very articles trained on. Causal LM and document_mask
    take the same path."""
    paragraphs = pydoc_text.read_text().splitlines()[:400]
    files = []
    for name, part in (("a", paragraphs[:250]), ("b", paragraphs[250:])):
        (tmp_path / f"{name}.txt").write_text("".join(f"marker{name}{i:03d} {p}\n" for i, p in enumerate(part)))
        files.append(str(tmp_path / f"{name}.txt"))
    rows = [f"marker{name}{i:03d}" for name, count in (("a", 250), ("b", 150)) for i in range(count)]
    for options in ({"seed": 1}, {"seed": 2, "objective": "causal"}, {"seed": 3, "document_mask": True}):
        dm = CorpusDataModule(train_files=files, validation_fraction=0.05, wordpiece_vocab_size=500, block_size=32,
                              **options)
        train, validation = ([text.split()[0] for text in dm.raw[split]["text"]] for split in ("train", "validation"))
        assert validation == rows[:20] and train == rows[20:], options  # 5 % of 400, disjoint, covering train
    one_row = CorpusDataModule(train_files=files, validation_fraction=0.0025, wordpiece_vocab_size=500, block_size=64)
    with pytest.raises(ValueError, match=r"^the validation split has fewer than 64 tokens; give more text, a larger "
                                         r"validation_fraction, validation_files or a smaller block_size$"):
        one_row.setup("validate")  # the first paragraph alone
    with pytest.raises(ValueError, match=r"^validation_fraction 0.5 of 1 train row\(s\) leaves nothing to train on; "
                                         r"give more text, a smaller validation_fraction or validation_files$"):
        ensure_validation(DatasetDict({"train": Dataset.from_dict({"text": ["one line"]})}), 0.5, None)


def test_a_test_without_a_test_split_says_what_to_set(pydoc_text):
    """Local files without test_files, and the quickstart's built-in corpus (train only; validation is held out of
    it): ``bigmodel test`` stops at once with one line naming the setting."""
    dm = CorpusDataModule(train_files=str(pydoc_text), wordpiece_vocab_size=800, block_size=64)
    with pytest.raises(ValueError, match=r"^this corpus has no test split: set --data.init_args.test_files "
                                         r"\(held-out text, like validation_files\)$"):
        dm.setup("test")
    builtin = CorpusDataModule(dataset="builtin:pydoc", wordpiece_vocab_size=800, block_size=64)
    assert set(builtin.raw) == {"train", "validation"}
    with pytest.raises(ValueError, match=r"^dataset 'builtin:pydoc' has no test split: pretrain on local train_files "
                                         r"with --data.init_args.test_files"):
        builtin.setup("test")
    assert dm.datasets == {} and builtin.datasets == {}  # nothing was tokenised


def test_resumable_sampler_deals_one_order_to_ranks_and_resumes_each_rank():
    from bigmodel.data.sampling import ResumableSampler

    ranks = [ResumableSampler(11, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for s in ranks:
        s.set_epoch(4)
    shares = [[i for _, i in s] for s in ranks]
    assert len(shares[0]) == len(shares[1]) == len(ranks[0]) == 6  # padded to 12 by repeating the start
    assert set(shares[0]) | set(shares[1]) == set(range(11))
    one = ResumableSampler(11, seed=3)
    one.set_epoch(4)
    order = [i for _, i in one]
    assert shares[0] == order[0::2] and shares[1] == (order + order[:1])[1::2]
    resumed = ResumableSampler(11, seed=3, rank=1, world_size=2)
    resumed.resume(epoch=4, consumed=4)
    assert [i for _, i in resumed] == shares[1][4:]
    assert [i for _, i in resumed] == shares[1]  # skip applies to one iteration only
    finished = ResumableSampler(11, seed=3, rank=1, world_size=2)
    finished.resume(epoch=3, consumed=6)  # saved at the end of epoch 3: Lightning goes on with epoch 4
    finished.set_epoch(4)
    assert [i for _, i in finished] == shares[1]  # the whole of epoch 4, nothing skipped


def test_same_text_gets_the_same_vocabulary_whatever_its_fingerprint(pydoc_text, tmp_path, caplog):
    """Two runs on the same files (here: the file touched in between, which changes the datasets fingerprint)
    must share one cache entry, not train two vocabularies."""
    import logging
    import os

    path = tmp_path / "docs.txt"
    path.write_text("\n\n".join(pydoc_text.read_text().splitlines()[:400]))  # an empty line between documents
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        first = CorpusDataModule(train_files=str(path), wordpiece_vocab_size=500, block_size=32)
        first.setup("fit")
    assert "Corpus: dropped 379 empty train rows (of 759)" in caplog.text
    os.utime(path, (1_000_000_000, 1_000_000_000))
    second = CorpusDataModule(train_files=str(path), wordpiece_vocab_size=500, block_size=32)
    assert first.raw["train"]._fingerprint != second.raw["train"]._fingerprint
    assert first.tokenizer.name_or_path == second.tokenizer.name_or_path
    assert first.tokenizer.get_vocab() == second.tokenizer.get_vocab()


def test_causal_objective_gives_whole_blocks_as_labels_and_prompts_for_predict(pydoc_text, tmp_path):
    from bigmodel.data.collators import CausalLMCollator

    dm = CorpusDataModule(train_files=str(pydoc_text), wordpiece_vocab_size=800, block_size=32, batch_size=4,
                          objective="causal")
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "labels"}  # no padding in blocks: no mask, SDPA's causal kernel
    assert batch["input_ids"].shape == (4, 32) and torch.equal(batch["labels"], batch["input_ids"])
    padded = CausalLMCollator(dm.tokenizer)([{"input_ids": [2, 7, 8]}, {"input_ids": [2, 9]}])
    assert padded["labels"].tolist() == [[2, 7, 8], [2, 9, -100]]  # padding is never a target
    assert padded["attention_mask"].tolist() == [[True, True, True], [True, True, False]]

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The while statement\n\nReturn a copy\n")
    dm = CorpusDataModule(train_files=str(pydoc_text), wordpiece_vocab_size=800, objective="causal",
                          predict_files=str(prompts))
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert batch["text"] == ["The while statement", "Return a copy"]
    assert [ids[0].item() for ids in batch["prompt_ids"]] == [dm.tokenizer.cls_token_id] * 2  # as a block begins
    assert dm.tokenizer.sep_token_id not in batch["prompt_ids"][0].tolist()  # the text goes on


def test_a_hub_dataset_not_in_the_cache_offline_is_one_line_naming_local_files(monkeypatch):
    """HF_HUB_OFFLINE=1 and a dataset name never downloaded: ``datasets`` raises a ConnectionError (the CLI printed
    jsonargparse's traceback of it); now one line says it is not cached and how to give the text locally."""
    from bigmodel.data.sources import HubUnavailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(HubUnavailableError) as err:
        CorpusDataModule(dataset="no-such-org/no-such-corpus")
    assert str(err.value) == ("cannot load dataset 'no-such-org/no-such-corpus': not in the Hugging Face cache "
                              "(HF_HUB_OFFLINE=1); copy the data to local files (.txt/.jsonl/.csv/.tsv/.parquet) and "
                              "pass them as data.init_args.train_files / validation_files / test_files")


def test_a_text_column_of_numbers_is_refused_naming_the_columns_of_texts(tmp_path):
    """A .csv whose text_column names its id column: one line before any tokenizer is trained (it was trained on
    nothing, the non-string cells being skipped, and tokenising then failed on int.strip)."""
    path = tmp_path / "docs.csv"
    path.write_text("id,body\n" + "".join(f"{i},some words of document {i}\n" for i in range(50)))
    with pytest.raises(ValueError, match=r"^text column 'id' of the train split holds int64 values, not texts; set "
                                         r"data.init_args.text_column to a column of texts \(here: \['body'\]\)$"):
        CorpusDataModule(train_files=str(path), text_column="id", wordpiece_vocab_size=200, block_size=8)


def _bpe_tokenizer(texts, folder, **specials):
    """A GPT-style byte-level BPE saved as a Hugging Face tokenizer: no [CLS], [SEP], [MASK] or padding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"]))
    PreTrainedTokenizerFast(tokenizer_object=tok, **specials).save_pretrained(str(folder))
    return str(folder)


def test_a_gpt_style_tokenizer_ends_each_document_with_its_eos_and_begins_blocks_with_its_bos(pydoc_text, tmp_path):
    """Without [CLS]/[SEP] the blocks held None where those were (the documents ran together); now each document
    ends with the EOS, a block begins with the BOS when there is one, and prompts begin as blocks do."""
    from bigmodel.data.corpus import document_tokens

    docs = [line for line in pydoc_text.read_text().splitlines() if line.strip()][:60]
    train = tmp_path / "train.txt"
    train.write_text("\n".join(docs) + "\n")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The while statement\n")
    eos_only = _bpe_tokenizer(docs, tmp_path / "eos", eos_token="<|endoftext|>")
    dm = CorpusDataModule(train_files=str(train), validation_files=str(train), tokenizer=eos_only, objective="causal",
                          block_size=16, predict_files=str(prompts))
    dm.setup("validate")
    stream = [t for ids in dm.tokenizer(docs, add_special_tokens=False)["input_ids"] for t in ids + [0]]
    blocks = dm.datasets["validation"].with_format(None)["input_ids"][:]
    assert blocks == [stream[i : i + 16] for i in range(0, len(stream) // 16 * 16, 16)]
    dm.setup("predict")
    assert dm.datasets["predict"][0]["input_ids"] == dm.tokenizer("The while statement")["input_ids"]

    gpt2_like = _bpe_tokenizer(docs, tmp_path / "gpt2", eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    dm = CorpusDataModule(train_files=str(train), validation_files=str(train), tokenizer=gpt2_like,
                          objective="causal", block_size=16)
    dm.setup("validate")
    blocks = dm.datasets["validation"].with_format(None)["input_ids"][:]
    assert blocks[:2] == [[0] + stream[:15], [0] + stream[15:30]]
    assert document_tokens(dm.tokenizer) == (0, 0)

    with pytest.raises(ValueError, match=r"has neither a \[SEP\] nor an EOS token to end each document with: give "
                                         r"data.init_args.tokenizer one that has, or leave it unset"):
        CorpusDataModule(train_files=str(train), tokenizer=_bpe_tokenizer(docs, tmp_path / "none"), objective="causal")
    with pytest.raises(ValueError, match=r"^MLM needs a tokenizer with mask and pad tokens .*objective: causal\)$"):
        CorpusDataModule(train_files=str(train), tokenizer=eos_only)  # at once, not after tokenising


def test_a_continuation_is_cut_at_the_first_end_of_document_after_its_prompt(pydoc_text, tmp_path):
    """A GPT-style tokenizer has no [SEP]: the continuation ran on past the end of its document. Its end is the EOS,
    which a GPT-2-like tokenizer also begins the prompt with, so the cut looks only at the generated tokens."""
    from transformers import AutoTokenizer

    from bigmodel.run.predictions import generated_rows

    docs = [line for line in pydoc_text.read_text().splitlines() if line.strip()][:60]
    tok = AutoTokenizer.from_pretrained(_bpe_tokenizer(docs, tmp_path / "gpt2", eos_token="<|endoftext|>",
                                                       bos_token="<|endoftext|>"))
    prompt = [0] + tok("The while")["input_ids"]
    more, after = tok(" statement")["input_ids"], tok(" Next")["input_ids"]
    batch = {"text": ["The while"], "prompt_length": [len(prompt)],
             "generated": {"greedy": [prompt + more + [0] + after]}}
    assert generated_rows(batch, tok) == [{"text": "The while", "greedy": "The while statement"}]


def test_mlm_probability_outside_0_1_is_refused_before_tokenising(pydoc_text):
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match=rf"^mlm_probability {bad}: set data.init_args.mlm_probability in "
                                             r"\(0, 1\] \(BERT's is 0.15\)$"):
            CorpusDataModule(train_files=str(pydoc_text), wordpiece_vocab_size=800, mlm_probability=bad)


def test_whole_word_mask_reaches_the_training_batches_and_is_for_mlm_only(pydoc_text):
    dm = CorpusDataModule(train_files=str(pydoc_text), wordpiece_vocab_size=800, block_size=64, batch_size=32,
                          whole_word_mask=True)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    selected = torch.zeros(batch["input_ids"].numel(), dtype=torch.bool)
    selected[batch["masked_positions"]] = True
    original = batch["input_ids"].view(-1).clone()
    original[batch["masked_positions"]] = batch["masked_labels"]
    pieces = torch.tensor([t.startswith("##") for t in dm.tokenizer.convert_ids_to_tokens(original.tolist())])
    special = torch.isin(original, torch.tensor(dm.tokenizer.all_special_ids))
    pieces &= ~torch.nn.functional.pad(special[:-1], (1, 0), value=True)  # a block cut mid-word starts a word
    assert pieces.sum() > 100 and torch.equal(selected[1:][pieces[1:]], selected[:-1][pieces[1:]])
    with pytest.raises(ValueError, match="whole_word_mask is for objective: mlm"):
        CorpusDataModule(train_files=str(pydoc_text), objective="causal", whole_word_mask=True)
