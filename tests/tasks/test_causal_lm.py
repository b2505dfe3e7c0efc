"""Causal LM: the model never looks ahead, its decoder is the embedding, generation, and a real fit + predict."""

import json
import math
from pathlib import Path

import pytest
import torch

from bigmodel.commands.cli import BigModelCLI
from bigmodel.nn import CausalLanguageModel, EncoderConfig
from bigmodel.tasks import CausalLMTask
from tests.test_cli import mlm_config, write_yaml

VOCAB = 50


def tiny_model(**overrides) -> CausalLanguageModel:
    torch.manual_seed(0)
    config = EncoderConfig.from_name(
        "bert-tiny", vocab_size=VOCAB, causal=True, hidden_dropout=0.0, attention_dropout=0.0,
        max_position_embeddings=32, **overrides,
    )
    return CausalLanguageModel(config).eval()


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
@pytest.mark.parametrize("padded", [False, True], ids=["no-mask", "padding-mask"])
def test_changing_a_later_token_leaves_earlier_logits_unchanged(norm_first, padded):
    model = tiny_model(norm_first=norm_first)
    ids = torch.randint(5, VOCAB, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    if padded:
        mask[1, 9:] = 0  # right padding: row 1 has 9 real tokens
    mask_arg = mask if padded else None
    t = 6
    changed = ids.clone()
    changed[:, t] = (ids[:, t] + 1 - 5) % (VOCAB - 5) + 5
    before, after = model(ids, mask_arg), model(changed, mask_arg)  # SDPA path (is_causal / boolean mask)
    assert before.shape == (2, 12, VOCAB)
    torch.testing.assert_close(before[:, :t], after[:, :t], rtol=0, atol=1e-6)
    assert not torch.allclose(before[:, t], after[:, t])  # the changed position itself does see it
    # the explicit softmax path (attention weights returned) agrees and never weighs a later key
    out = model.encoder(ids, mask_arg, output_attentions=True)
    torch.testing.assert_close(torch.nn.functional.linear(out.last_hidden_state, model.decoder_weight), before,
                               rtol=1e-4, atol=1e-5)
    for weights in out.attentions:
        assert weights.triu(diagonal=1).abs().max() == 0


def test_decoder_is_the_word_embedding_matrix():
    model = tiny_model(norm_first=True)
    assert model.decoder_weight is model.encoder.embeddings.word_embeddings.weight
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in model.encoder.parameters())
    ids = torch.randint(5, VOCAB, (1, 8))
    hidden = model.encoder(ids).last_hidden_state
    torch.testing.assert_close(model(ids), hidden @ model.encoder.embeddings.word_embeddings.weight.T)


def test_a_non_causal_config_is_refused():
    with pytest.raises(ValueError, match="causal=True"):
        CausalLanguageModel(EncoderConfig.from_name("bert-tiny", vocab_size=VOCAB))
    with pytest.raises(ValueError, match="remove causal: false"):
        CausalLMTask(vocab_size=VOCAB, encoder_config={"causal": False})
    assert CausalLMTask(vocab_size=VOCAB).config.causal  # the preset's causal=False is overridden


def test_generate_greedy_is_deterministic_and_top_k_draws_only_the_k_most_likely():
    model = tiny_model(norm_first=True)
    prompt = torch.randint(5, VOCAB, (3, 5))
    greedy = model.generate(prompt, 6, greedy=True)
    assert greedy.shape == (3, 11) and torch.equal(greedy[:, :5], prompt)
    assert torch.equal(greedy, model.generate(prompt, 6, greedy=True))
    assert torch.equal(model.generate(prompt, 6, top_k=1), greedy)  # k=1 is greedy
    allowed = model(prompt)[:, -1].topk(3).indices  # (3, 3)
    draws = torch.cat([model.generate(prompt, 1, top_k=3, temperature=5.0)[:, -1:] for _ in range(40)], 1)
    assert all(set(draws[b].tolist()) <= set(allowed[b].tolist()) for b in range(3))
    assert len(set(draws.flatten().tolist())) > 3  # it does sample (hot temperature), not always the argmax
    g = [torch.Generator().manual_seed(1) for _ in range(2)]
    assert torch.equal(model.generate(prompt, 4, top_k=10, generator=g[0]),
                       model.generate(prompt, 4, top_k=10, generator=g[1]))
    # longer than max_position_embeddings (32): the context is cropped to the last 32 tokens
    assert model.generate(prompt[:1], 40, greedy=True).shape == (1, 45)


def test_generate_stops_when_every_row_has_ended_and_ended_rows_keep_the_end_token():
    """With ``eos_token_id`` a row that generated it gets it again at every later step, and the loop stops once
    every row has: fewer forward passes, the same tokens up to each row's end."""
    model = tiny_model(norm_first=True)
    prompt = torch.randint(5, VOCAB, (3, 5), generator=torch.Generator().manual_seed(0))
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(1))
    full = model.generate(prompt, 8, greedy=True)
    assert len(calls) == 8
    never = next(t for t in range(VOCAB) if t not in full[:, 5:])  # a case that does not end early: unchanged
    calls.clear()
    assert torch.equal(model.generate(prompt, 8, greedy=True, eos_token_id=never), full) and len(calls) == 8

    def cut(row, end):  # the tokens up to and with the first generated end
        new = row[5:].tolist()
        return row[: 5 + new.index(end) + 1] if end in new else row

    end = int(full[0, 6])  # row 0's second new token
    calls.clear()
    out = model.generate(prompt, 8, greedy=True, eos_token_id=end)
    ends = [cut(row, end) for row in full]
    steps = max(len(c) for c in ends) - 5
    assert len(calls) == steps and out.shape == (3, 5 + steps)
    for row, c in zip(out, ends):
        assert torch.equal(row[: len(c)], c) and (row[len(c):] == end).all()
    calls.clear()
    one = model.generate(prompt[:1], 8, greedy=True, eos_token_id=end)  # one row: it stops right after its end
    assert torch.equal(one[0], ends[0]) and len(calls) == len(ends[0]) - 5 < 8
    sampled = [model.generate(prompt[:1], 8, top_k=5, temperature=2.0, generator=torch.Generator().manual_seed(4),
                              eos_token_id=e) for e in (None, end)]
    assert torch.equal(sampled[1][0], cut(sampled[0][0], end))  # a sample draws the same until it ends


def test_predict_stops_generating_at_the_end_of_document_and_writes_the_same_text():
    """The task passes its tokenizer's end of document ([SEP]) to generate: the rows written are those of all
    ``max_new_tokens`` steps cut at that end, with fewer forward passes."""
    from types import SimpleNamespace

    from bigmodel.run.predictions import generated_rows

    def tokenizer(sep):  # ids written as numbers; [SEP] is ``sep``
        return SimpleNamespace(cls_token_id=1, bos_token_id=None, sep_token_id=sep, eos_token_id=None,
                               name_or_path="ids", decode=lambda ids, skip_special_tokens: " ".join(map(str, ids)))

    task = CausalLMTask(vocab_size=VOCAB, max_new_tokens=8, top_k=5, temperature=2.0,
                        encoder_config={"max_position_embeddings": 32, "hidden_dropout": 0.0,
                                        "attention_dropout": 0.0}).eval()
    torch.manual_seed(0)
    batch = {"text": ["a", "b"], "prompt_ids": [torch.randint(5, VOCAB, (n,)) for n in (4, 6)]}
    calls = []
    task.net.register_forward_pre_hook(lambda module, args: calls.append(1))

    def predict(sep):
        task._trainer = None if sep is None else SimpleNamespace(
            datamodule=SimpleNamespace(tokenizer=tokenizer(sep)), global_rank=0)
        calls.clear()
        return task.predict_step(batch, 0), len(calls)

    before, count = predict(None)  # no tokenizer: every step runs, as before
    assert count == 2 * 2 * 8  # two prompts, greedy and sampled
    made = {t for rows in before["generated"].values() for ids, n in zip(rows, (4, 6)) for t in ids[n:]}
    never = next(t for t in range(VOCAB) if t not in made)
    assert predict(never) == (before, 2 * 2 * 8)  # a case that does not end early: the same
    end = before["generated"]["greedy"][0][4]  # the first prompt's first greedy token
    out, count = predict(end)
    assert count < 2 * 2 * 8 and len(out["generated"]["greedy"][0]) == 4 + 1
    for name, sequences in out["generated"].items():
        for ids, full, n in zip(sequences, before["generated"][name], (4, 6)):
            cut = full[: full.index(end, n) + 1] if end in full[n:] else full
            assert ids == cut  # the same tokens up to and with the end
    assert generated_rows(out, tokenizer(end)) == generated_rows(before, tokenizer(end))  # the same text written


def causal_config(tmp, train_file) -> dict:
    """The CLI test's MLM run made causal, and small: 60 steps of 16 blocks of 64 tokens (seconds)."""
    config = mlm_config(tmp, train_file, max_epochs=1, limit_train_batches=60, limit_val_batches=5)
    config["trainer"]["logger"]["init_args"]["name"] = "causal"
    config["model"] = {"class_path": "bigmodel.tasks.CausalLMTask",
                       "init_args": {"encoder": "bert-tiny", "lr": 3e-3, "warmup": 0.1, "max_new_tokens": 8,
                                     "encoder_config": {"norm_first": True, "hidden_dropout": 0.0,
                                                        "attention_dropout": 0.0}}}
    config["data"]["init_args"].update(objective="causal")
    return config


def test_causal_lm_loss_falls_on_real_text_then_predict_continues_prompts(tmp_path, pydoc_text):
    config = write_yaml(tmp_path / "causal.yaml", causal_config(tmp_path, pydoc_text))
    cli = BigModelCLI(args=["fit", "-c", config])
    vocab = cli.model.hparams.vocab_size
    metrics = cli.trainer.callback_metrics
    # validation is held-out text (the corpus's first 5 %, contiguous): 5.41 and 9.2 % here, where random paragraphs
    # of the trained topics gave an optimistic 5.31 and 10.0 %
    assert metrics["val/loss"] < math.log(vocab) - 1.2, f"val loss {metrics['val/loss']:.2f}, chance {math.log(vocab):.2f}"
    assert abs(metrics["val/ppl"] - metrics["val/loss"].exp()) < 1e-3 * metrics["val/ppl"]
    assert metrics["val/acc"] > 0.07  # chance: 0.001
    best = tmp_path / "runs" / "causal" / "checkpoints" / "best.ckpt"
    saved = torch.load(best, weights_only=True)
    assert saved["bigmodel"]["task"] == "causal_lm" and "top_k" not in saved["hyper_parameters"]
    assert saved["bigmodel"]["block_size"] == 64  # what generation's context is cropped to (less the shift)

    prompts = tmp_path / "prompts.txt"
    long_prompt = " ".join(["the string"] * 40)  # 80 words: longer than the 63 tokens training read
    prompts.write_text(f"The for statement is used to\n\nReturn a copy of the string\n\n{long_prompt}\n")
    out = tmp_path / "continued.jsonl"
    with pytest.warns(UserWarning) as caught:
        BigModelCLI(args=["predict", "-c", config, "--ckpt_path", str(best), "--model.init_args.max_new_tokens", "3",
                          "--data.init_args.predict_files", str(prompts), "--predictions.output", str(out)])
    said = [str(w.message) for w in caught if "prompt of" in str(w.message)]
    assert said == ["a prompt of 81 tokens is longer than the 63 the model was trained to read (block_size 64 at "
                    "fit): it and any other prompt that long are cropped to their last 63 tokens as context"]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows.pop()["greedy"].startswith(long_prompt)  # the prompt itself is written whole
    assert [r["text"] for r in rows] == ["The for statement is used to", "Return a copy of the string"]
    for r in rows:
        assert set(r) == {"text", "greedy", "sampled"}
        assert r["greedy"].startswith(r["text"].lower()) and r["sampled"].startswith(r["text"].lower())
        assert len(r["greedy"].split()) <= len(r["text"].split()) + 3  # the command line's max_new_tokens holds
    assert any(len(r["sampled"]) > len(r["text"]) for r in rows)  # something was generated (a [SEP] stops it)

    with pytest.raises(ValueError, match=r"^this corpus has no test split: set --data.init_args.test_files"):
        BigModelCLI(args=["test", "-c", config, "--ckpt_path", str(best)])
    held = tmp_path / "held.txt"
    held.write_text("\n".join(pydoc_text.read_text().splitlines()[:100]) + "\n")
    tested = BigModelCLI(args=["test", "-c", config, "--ckpt_path", str(best), "--data.init_args.test_files", str(held)])
    record = json.loads((Path(tested.trainer.log_dir) / "test_metrics.json").read_text())
    test = record["metrics"]
    assert {"test/loss", "test/ppl", "test/acc"} <= set(test) and record["ckpt_path"] == str(best)
    assert test["test/ppl"] == pytest.approx(math.exp(test["test/loss"]), rel=1e-5)
    assert test["test/loss"] < math.log(vocab) - 1.0  # the checkpoint's weights, not a fresh model's


def test_batches_of_the_other_objective_are_refused_naming_the_option(pydoc_text):
    from bigmodel.data import CorpusDataModule
    from bigmodel.tasks import MLMTask

    dm = CorpusDataModule(train_files=str(pydoc_text), wordpiece_vocab_size=800, block_size=32, batch_size=4)
    dm.setup("fit")
    masked = next(iter(dm.val_dataloader()))
    with pytest.raises(ValueError, match="got masked-LM batches: set data.init_args.objective: causal"):
        CausalLMTask(vocab_size=dm.vocab_size).training_step(masked, 0)
    dm.hparams.objective = "causal"
    with pytest.raises(ValueError, match="got whole blocks: set data.init_args.objective: mlm"):
        MLMTask(vocab_size=dm.vocab_size).training_step(next(iter(dm.val_dataloader())), 0)


def test_token_accuracy_equals_torchmetrics_with_ignore_index_and_its_validation_sums_are_token_weighted():
    """The language-model tasks count hits without boolean indexing (no host sync); the numbers must not change."""
    from torchmetrics.classification import MulticlassAccuracy

    from bigmodel.tasks.language_model import LanguageModelTask, token_hits

    logits, labels = torch.randn(50, 7), torch.randint(0, 7, (50,))
    labels[::4] = -100
    hits, counted = token_hits(logits, labels)
    reference = MulticlassAccuracy(7, average="micro", ignore_index=-100)(logits, labels)
    torch.testing.assert_close(hits.sum() / counted.sum(), reference)
    task = LanguageModelTask.__new__(LanguageModelTask)
    torch.nn.Module.__init__(task)
    task._trainer = None  # stepped by hand
    task._init_metrics()
    logged = {}
    task.log_dict = lambda values, **_: logged.update(values)
    for loss, count, hits in ((2.0, 30, 3), (4.0, 10, 1)):  # batch mean losses over their own token counts
        logits = torch.eye(2)[[0] * hits + [1] * (count - hits)]  # the first `hits` tokens predict label 0
        result = (torch.tensor(loss), logits, torch.zeros(count, dtype=torch.long), count)
        task._step = lambda batch, result=result: result
        task.validation_step({"input_ids": torch.zeros(1, 2)}, 0)
    task.on_validation_epoch_end()
    torch.testing.assert_close(logged["val/loss"], torch.tensor((2.0 * 30 + 4.0 * 10) / 40))
    torch.testing.assert_close(logged["val/acc"], torch.tensor(4.0 / 40))


@pytest.mark.parametrize("stage", ["validate", "test"])
@pytest.mark.parametrize("objective", ["mlm", "causal"])
def test_validation_under_ddp_leaves_out_the_samplers_copy_of_a_block(objective, stage, pydoc_text, tmp_path):
    """5 blocks on 2 ranks, batches of 3: Lightning's DistributedSampler gives rank 1 blocks 1, 3 and a copy of block
    0, in one batch (rank 1 faked here in one process). Its validation (and test) numbers are those of blocks 1 and
    3: the copy's masked (MLM: flat positions into the batch) or next tokens count nowhere."""
    import lightning as L
    from torch.utils.data import DataLoader, DistributedSampler

    from bigmodel.data.collators import CausalLMCollator, MLMCollator
    from bigmodel.data.tokenizer import train_wordpiece
    from bigmodel.tasks import MLMTask
    from bigmodel.tasks.language_model import token_hits

    tok = train_wordpiece(pydoc_text.read_text().splitlines(), vocab_size=600)
    torch.manual_seed(0)
    blocks = [{"input_ids": torch.cat([torch.tensor([tok.cls_token_id]), torch.randint(10, len(tok), (23,))])}
              for _ in range(5)]
    mlm = objective == "mlm"
    task = (MLMTask if mlm else CausalLMTask)(vocab_size=len(tok), encoder_config={"hidden_dropout": 0.0})
    sampler = DistributedSampler(blocks, num_replicas=2, rank=1, shuffle=False)
    loader = DataLoader(blocks, batch_size=3, sampler=sampler,
                        collate_fn=MLMCollator(tok, mlm_probability=0.3, seed=42) if mlm else CausalLMCollator(tok))
    assert list(sampler) == [1, 3, 0]
    batch = next(iter(loader))  # each block's masks come from its content: the same in validate below
    if mlm:
        own_positions = batch["masked_positions"] < 2 * batch["input_ids"].shape[1]
        assert not own_positions.all()  # the copy has masked tokens
        own = {"input_ids": batch["input_ids"][:2], "masked_positions": batch["masked_positions"][own_positions],
               "masked_labels": batch["masked_labels"][own_positions]}
    else:
        own = {key: value[:2] for key, value in batch.items()}
    with torch.no_grad():
        loss, logits, labels, _ = task.eval()._step(own)
    hits, counted = token_hits(logits, labels)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    logged = getattr(trainer, stage)(task, loader, verbose=False)[0]
    prefix = "val" if stage == "validate" else "test"
    assert logged[f"{prefix}/loss"] == pytest.approx(loss.item(), rel=1e-5)
    assert logged[f"{prefix}/ppl"] == pytest.approx(loss.exp().item(), rel=1e-5)
    assert logged[f"{prefix}/acc"] == pytest.approx((hits.sum() / counted.sum()).item(), rel=1e-6)


@pytest.mark.parametrize("objective", ["mlm", "causal"])
def test_test_on_the_validation_file_gives_the_validation_numbers(objective, pydoc_text, tmp_path):
    """``trainer.test`` of an unfitted model over local test_files: the validation code path, the same masks per
    block (MLM), so test numbers on the validation file are val's, at another batch size too; test/ppl is
    exp(test/loss). A validate tokenises no test split."""
    import lightning as L

    from bigmodel.data import CorpusDataModule
    from bigmodel.tasks import MLMTask

    held = tmp_path / "held.txt"
    held.write_text("\n".join(pydoc_text.read_text().splitlines()[:80]) + "\n")
    data = {"train_files": str(pydoc_text), "validation_files": str(held), "test_files": str(held),
            "objective": objective, "wordpiece_vocab_size": 600, "block_size": 32}
    dm = CorpusDataModule(batch_size=4, **data)
    task = (MLMTask if objective == "mlm" else CausalLMTask)(
        vocab_size=dm.vocab_size, encoder_config={"hidden_dropout": 0.0, "attention_dropout": 0.0})
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    val = trainer.validate(task, datamodule=dm, verbose=False)[0]
    assert set(dm.datasets) == {"validation"}
    tested = CorpusDataModule(batch_size=7, **data)
    test = trainer.test(task, datamodule=tested, verbose=False)[0]
    assert set(tested.datasets) == {"test"}  # a test tokenises only its own split
    assert set(test) == {"test/loss", "test/ppl", "test/acc"}
    assert test["test/loss"] == pytest.approx(val["val/loss"], rel=1e-5)
    assert test["test/acc"] == pytest.approx(val["val/acc"], rel=1e-6)
    assert test["test/ppl"] == pytest.approx(math.exp(test["test/loss"]), rel=1e-5)
    assert test["test/loss"] > 1.0  # an unfitted model: real numbers, not an empty sum


def test_generate_crops_the_context_to_the_positions_left_after_a_roberta_offset():
    torch.manual_seed(0)
    config = EncoderConfig.from_name("bert-tiny", vocab_size=VOCAB, causal=True, norm_first=True, position_offset=2,
                                     max_position_embeddings=12)  # 10 usable positions
    model = CausalLanguageModel(config).eval()
    prompt = torch.randint(5, VOCAB, (1, 7))
    out = model.generate(prompt, 8, greedy=True)  # 15 tokens: past 12 - 2 from the 4th new token
    assert out.shape == (1, 15) and torch.equal(out[:, :7], prompt)
    assert out[0, -1] == model(out[:, -11:-1])[0, -1].argmax()  # the last 10 tokens were the context


def test_decoding_settings_are_checked_when_the_task_is_built_and_top_k_0_is_off():
    with pytest.raises(ValueError, match=r"top_k -1: set model.init_args.top_k >= 1, or 0 or null"):
        CausalLMTask(vocab_size=VOCAB, top_k=-1)
    for temperature in (0.0, -1.0):
        with pytest.raises(ValueError, match=r"set model.init_args.temperature > 0"):
            CausalLMTask(vocab_size=VOCAB, temperature=temperature)
    with pytest.raises(ValueError, match=r"set model.init_args.max_new_tokens >= 0"):
        CausalLMTask(vocab_size=VOCAB, max_new_tokens=-1)
    assert CausalLMTask(vocab_size=VOCAB, top_k=0).generation["top_k"] == 0
    model, prompt = tiny_model(), torch.randint(5, VOCAB, (2, 4))
    off, unfiltered = (model.generate(prompt, 5, top_k=k, temperature=3.0, generator=torch.Generator().manual_seed(3))
                       for k in (0, None))
    assert torch.equal(off, unfiltered)
    with pytest.raises(ValueError, match="top_k must be >= 0"):
        model.generate(prompt, 1, top_k=-2)


def test_generate_crops_the_context_to_max_context_and_refuses_more_than_the_positions():
    model, prompt = tiny_model(norm_first=True), torch.randint(5, VOCAB, (1, 10))
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    out = model.generate(prompt, 3, greedy=True, max_context=4)
    assert out.shape == (1, 13) and seen == [4, 4, 4]
    for t in range(10, 13):  # each new token is the argmax given only the 4 tokens before it
        assert out[0, t] == model(out[:, t - 4:t])[0, -1].argmax()
    seen.clear()
    model.generate(prompt, 3, greedy=True)
    assert seen == [10, 11, 12]  # by default all 32 positions
    for bad in (0, 33):
        with pytest.raises(ValueError, match=rf"max_context must be in \[1, 32\] \(the encoder's positions\), "
                                             rf"got {bad}"):
            model.generate(prompt, 1, max_context=bad)


def test_predict_generates_from_the_trained_block_and_says_once_when_a_prompt_is_cropped():
    task = CausalLMTask(vocab_size=VOCAB, max_new_tokens=2, encoder_config={"max_position_embeddings": 32}).eval()
    task.on_load_checkpoint({"bigmodel": {"block_size": 9}})  # what a fit on blocks of 9 tokens wrote
    assert task.checkpoint_meta()["block_size"] == 9
    prompts = [torch.randint(5, VOCAB, (n,)) for n in (5, 20, 25)]
    task.on_predict_start()
    seen = []
    task.net.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    with pytest.warns(UserWarning) as caught:
        out = task.predict_step({"text": ["a", "b", "c"], "prompt_ids": prompts}, 0)
    assert seen == [5, 6] * 2 + [8, 8] * 4  # greedy and sampled, 2 new tokens each: never more than 8 tokens
    said = [str(w.message) for w in caught]
    assert said == ["a prompt of 20 tokens is longer than the 8 the model was trained to read (block_size 9 at fit): "
                    "it and any other prompt that long are cropped to their last 8 tokens as context"]
    assert [len(ids) for ids in out["generated"]["greedy"]] == [7, 22, 27]  # the prompts themselves stay whole


def test_a_checkpoint_without_block_size_falls_back_to_the_tokenizers_length_then_the_positions():
    from types import SimpleNamespace

    task = CausalLMTask(vocab_size=VOCAB, encoder_config={"max_position_embeddings": 32})
    task.on_load_checkpoint({"bigmodel": {"task": "causal_lm"}})
    assert task.generation_context() == (32, "the encoder's positions; the checkpoint predates recording block_size")
    tokenizer = SimpleNamespace(model_max_length=16)  # a WordPiece trained for blocks of 16
    task._trainer = SimpleNamespace(datamodule=SimpleNamespace(tokenizer=tokenizer))
    assert task.generation_context() == (15, "the tokenizer's model_max_length 16; the checkpoint predates "
                                             "recording block_size")
    tokenizer.model_max_length = int(1e30)  # a hub tokenizer's "no limit" is not a length
    assert task.generation_context()[0] == 32


def test_a_fit_after_a_validate_on_the_same_trainer_trains_and_validates(pydoc_text, tmp_path):
    """The validation sums a validate resets (under inference mode) stay ordinary tensors: the fit that follows on
    the same Trainer updates them in its own validation, and a validate after it gives the fitted model's numbers."""
    import lightning as L

    from bigmodel.data import CorpusDataModule

    held = tmp_path / "held.txt"
    held.write_text("\n".join(pydoc_text.read_text().splitlines()[:80]) + "\n")
    dm = CorpusDataModule(train_files=str(pydoc_text), validation_files=str(held), objective="causal",
                          wordpiece_vocab_size=600, block_size=32, batch_size=4)
    task = CausalLMTask(vocab_size=dm.vocab_size, lr=1e-2,
                        encoder_config={"hidden_dropout": 0.0, "attention_dropout": 0.0})
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        max_steps=2, val_check_interval=2, limit_val_batches=2, num_sanity_val_steps=0,
                        default_root_dir=tmp_path)
    before = trainer.validate(task, datamodule=dm, verbose=False)[0]["val/loss"]
    trainer.fit(task, datamodule=dm)
    assert trainer.global_step == 2 and math.isfinite(trainer.callback_metrics["val/loss"].item())
    after = trainer.validate(task, datamodule=dm, verbose=False)[0]["val/loss"]
    assert after == pytest.approx(trainer.callback_metrics["val/loss"].item()) and after < before
