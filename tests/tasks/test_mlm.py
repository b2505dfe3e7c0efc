"""MLMTask's loss, token accuracy and validation sums ignore the padding of the masked positions (MLMCollator's
``masked_positions_multiple_of``): the same numbers as the unpadded batch."""

import torch

from bigmodel.data.collators import MLMCollator
from bigmodel.data.tokenizer import train_wordpiece
from bigmodel.run.figures import MaskedPredictions
from bigmodel.tasks import MLMTask
from bigmodel.tasks.language_model import token_hits


def test_padded_masked_positions_give_the_same_loss_accuracy_and_validation_numbers(pydoc_text):
    tok = train_wordpiece(pydoc_text.read_text().splitlines(), vocab_size=600)
    torch.manual_seed(0)
    ids = torch.randint(10, len(tok), (6, 48))
    ids[0, 40:] = tok.pad_token_id
    examples = [{"input_ids": row, "epoch": 0, "index": i} for i, row in enumerate(ids)]
    plain = MLMCollator(tok, seed=3)(examples)
    padded = MLMCollator(tok, seed=3, masked_positions_multiple_of=64)(examples)
    assert len(padded["masked_positions"]) > len(plain["masked_positions"])
    task = MLMTask(encoder="bert-tiny", vocab_size=len(tok),
                   encoder_config={"hidden_dropout": 0.0, "attention_dropout": 0.0}).eval()
    results = []
    with torch.no_grad():
        for batch in (plain, padded):
            loss, logits, labels, count = task._step(batch)
            hits, counted = token_hits(logits, labels)
            task.validation_step(batch, 0)
            sums = [m.compute() for m in (task.val_loss_sum, task.val_hits, task.val_tokens)]
            for m in (task.val_loss_sum, task.val_hits, task.val_tokens):
                m.reset()
            results.append((loss, hits.sum(), counted.sum(), count, *sums))
    (loss, hits, counted, count, *sums), (p_loss, p_hits, p_counted, p_count, *p_sums) = results
    torch.testing.assert_close(p_loss, loss, rtol=1e-6, atol=0)
    assert p_hits == hits and p_counted == counted == count == p_count == len(plain["masked_positions"])
    torch.testing.assert_close(p_sums[0], sums[0], rtol=1e-6, atol=0)  # validation loss sum
    assert p_sums[1:] == sums[1:]  # validation hits and tokens


def test_masked_predictions_leave_out_the_padding_of_the_positions(pydoc_text):
    tok = train_wordpiece(pydoc_text.read_text().splitlines(), vocab_size=600)
    ids = torch.randint(10, len(tok), (4, 32))
    plain = MLMCollator(tok, seed=1)([{"input_ids": row} for row in ids])
    padded = MLMCollator(tok, seed=1, masked_positions_multiple_of=64)([{"input_ids": row} for row in ids])
    shown = []
    for batch in (plain, padded):
        callback = MaskedPredictions(num_examples=2)
        callback.on_validation_batch_end(None, None, None, batch, 0)
        shown.append(callback.examples)
    assert torch.equal(shown[0]["positions"], shown[1]["positions"])
    assert torch.equal(shown[0]["original"], shown[1]["original"]) and torch.equal(shown[1]["original"], ids[:2])


def test_document_masked_blocks_reach_the_encoder_each_document_scored_as_if_alone(pydoc_text):
    """A packed block from MLMCollator(document_mask=True): the task's logits at the second document's masked
    positions equal those of that document run alone (positions restart, no attention across [SEP])."""
    tok = train_wordpiece(pydoc_text.read_text().splitlines(), vocab_size=600)
    torch.manual_seed(0)
    first, second = torch.randint(10, len(tok), (11,)), torch.randint(10, len(tok), (13,))
    sep = torch.tensor([tok.sep_token_id])
    block = torch.cat([first, sep, second, sep])
    packed = MLMCollator(tok, seed=1, mlm_probability=0.3, document_mask=True)([
        {"input_ids": block, "epoch": 0, "index": 0}])
    assert packed["document_ids"].tolist() == [[0] * 12 + [1] * 14]
    task = MLMTask(encoder="bert-tiny", vocab_size=len(tok),
                   encoder_config={"hidden_dropout": 0.0, "attention_dropout": 0.0}).eval()
    in_second = packed["masked_positions"] >= 12
    assert in_second.any()
    alone = {"input_ids": packed["input_ids"][:, 12:], "masked_positions": packed["masked_positions"][in_second] - 12,
             "masked_labels": packed["masked_labels"][in_second]}
    with torch.no_grad():
        _, logits, _, _ = task._step(packed)
        _, alone_logits, _, _ = task._step(alone)
        crossed = task._step({k: v for k, v in packed.items() if k != "document_ids"})[1]
    torch.testing.assert_close(logits[in_second], alone_logits, rtol=1e-5, atol=1e-5)
    assert (crossed[in_second] - alone_logits).abs().max() > 1e-3  # without the ids the documents mix


def test_train_accuracy_is_computed_only_on_the_steps_the_loggers_write(pydoc_text, tmp_path, monkeypatch):
    """The token accuracy (an argmax over the vocabulary) runs on logging steps only, and what is logged is the
    same: every logged step has train/acc, and it equals the accuracy of that step's batch."""
    import csv

    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from bigmodel.tasks import language_model

    tok = train_wordpiece(pydoc_text.read_text().splitlines(), vocab_size=600)
    torch.manual_seed(0)
    ids = torch.randint(10, len(tok), (8, 32))
    batches = [MLMCollator(tok, seed=3)([{"input_ids": row, "epoch": 0, "index": i} for i, row in enumerate(ids)])
               for _ in range(6)]
    calls = []
    real = language_model.token_hits

    def counting(logits, labels):
        hits, counted = real(logits, labels)
        calls.append(float(hits.sum() / counted.sum()))
        return hits, counted

    monkeypatch.setattr(language_model, "token_hits", counting)
    task = MLMTask(encoder="bert-tiny", vocab_size=len(tok), lr=1e-3)
    trainer = L.Trainer(max_steps=6, log_every_n_steps=2, logger=CSVLogger(tmp_path), enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(task, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    rows = [r for r in csv.DictReader(open(f"{trainer.logger.log_dir}/metrics.csv")) if r.get("train/acc")]
    logged = {int(r["step"]): float(r["train/acc"]) for r in rows}
    assert sorted(logged) == [1, 3, 5] and len(calls) == 3  # steps 2, 4, 6 (0-based 1, 3, 5) of 6
    assert [round(v, 6) for v in logged.values()] == [round(v, 6) for v in calls]


def test_a_bf16_autocast_step_on_cpu_matches_fp32_within_bf16_precision(pydoc_text):
    """experiments/trainer/cpu-bf16.yaml (Lightning's bf16-mixed: CPU autocast): the loss and every gradient of an
    MLM step agree with fp32 to bf16's precision, so the faster precision trains the same model."""
    tok = train_wordpiece(pydoc_text.read_text().splitlines(), vocab_size=600)
    torch.manual_seed(0)
    ids = torch.randint(10, len(tok), (8, 64))
    batch = MLMCollator(tok, seed=3)([{"input_ids": row, "epoch": 0, "index": i} for i, row in enumerate(ids)])
    task = MLMTask(encoder="bert-tiny", vocab_size=len(tok),
                   encoder_config={"hidden_dropout": 0.0, "attention_dropout": 0.0})
    results = []
    for autocast in (False, True):
        task.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = task._step(batch)[0]
        loss.backward()
        results.append((loss.detach().float(), [p.grad.clone() for p in task.parameters()]))
    (loss32, grads32), (loss16, grads16) = results
    torch.testing.assert_close(loss16, loss32, rtol=1e-2, atol=0)
    for g32, g16 in zip(grads32, grads16):
        assert g16.dtype == torch.float32  # the weights' gradients stay fp32 (master weights)
        cos = torch.nn.functional.cosine_similarity(g32.flatten(), g16.flatten(), dim=0)
        assert cos > 0.99 or g32.norm() < 1e-6


def test_predict_with_an_mlm_says_what_to_use_instead_before_any_batch():
    """`bigmodel predict` with the pretraining config leaked Lightning's "`Trainer.predict` requires `forward`"."""
    import lightning as L
    import pytest

    task = MLMTask(encoder="bert-tiny", vocab_size=100)
    batches = [{"input_ids": torch.ones(1, 8, dtype=torch.long)}]
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ValueError) as err:
        trainer.predict(task, batches)
    assert str(err.value) == ("MLMTask has no predict step: predict with a classification or causal-LM config, or "
                              "export the encoder with bigmodel export")
    assert err.traceback[-1].name == "setup"  # refused at setup, not at the first batch


def test_a_data_length_beyond_the_encoders_positions_is_refused_at_setup():
    """block_size / max_length longer than the positions was caught only in forward, at the first batch that long
    (possibly mid-training). The limit is the embedding's: RoBERTa's offset rows count against it, and a RoPE
    encoder's max_position_embeddings bounds it too."""
    from types import SimpleNamespace

    import pytest

    def set_up(task, **data):
        task.trainer = SimpleNamespace(datamodule=SimpleNamespace(hparams=data), ckpt_path=None,
                                       strategy=SimpleNamespace(root_device=torch.device("cpu")))
        task.setup("fit")

    roberta = MLMTask(encoder="bert-tiny", vocab_size=100,
                      encoder_config={"position_offset": 2, "max_position_embeddings": 66})
    set_up(roberta, block_size=64)  # exactly the positions there are
    with pytest.raises(ValueError) as err:
        set_up(roberta, block_size=65)
    assert str(err.value) == ("data.init_args.block_size 65 is longer than the encoder's 64 positions "
                              "(max_position_embeddings 66 less the offset 2); set data.init_args.block_size to at "
                              "most 64, or give the encoder more (model.init_args.encoder_config.max_position_embeddings)")
    with pytest.raises(ValueError) as err:  # the embedding refuses the same length: one rule
        roberta.net.encoder.embeddings(torch.ones(1, 65, dtype=torch.long))
    assert "exceeds max_position_embeddings=66 less the offset 2" in str(err.value)

    rope = MLMTask(encoder="modernbert-mini", vocab_size=100, encoder_config={"max_position_embeddings": 128})
    set_up(rope, max_length=128, batch_size=8)
    with pytest.raises(ValueError, match=r"^data.init_args.max_length 129 is longer than the encoder's 128 positions "
                                         r"\(max_position_embeddings 128\); set data.init_args.max_length to at most "
                                         r"128, or give"):
        set_up(rope, max_length=129)


def test_validation_loss_is_the_same_whatever_the_validation_batch_size(pydoc_text):
    """The masks of a validation block depend on that block alone, so val/loss, val/ppl and val/acc of one model
    over one validation set are the same with batches of 2 and of 5 (and so on 1 device or N)."""
    import lightning as L
    from torch.utils.data import DataLoader

    tok = train_wordpiece(pydoc_text.read_text().splitlines(), vocab_size=600)
    g = torch.Generator().manual_seed(0)
    blocks = [{"input_ids": row} for row in torch.randint(10, len(tok), (10, 32), generator=g)]
    torch.manual_seed(0)
    task = MLMTask(encoder="bert-tiny", vocab_size=len(tok))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    results = [trainer.validate(task, DataLoader(blocks, batch_size=size, collate_fn=MLMCollator(tok, seed=3)),
                                verbose=False)[0] for size in (2, 5)]
    assert results[0].keys() >= {"val/loss", "val/ppl", "val/acc"}
    for key in ("val/loss", "val/ppl", "val/acc"):
        assert abs(results[0][key] - results[1][key]) <= 1e-5 * abs(results[0][key]), (key, results)


def test_masked_prediction_figures_of_document_masked_blocks_keep_the_documents_apart(pydoc_text):
    """With ``document_mask`` the shown top-k are the validation step's own (each document alone); the figure ran
    the blocks without their ``document_ids``, so its guesses at the second document read the first."""
    from types import SimpleNamespace

    tok = train_wordpiece(pydoc_text.read_text().splitlines(), vocab_size=600)
    torch.manual_seed(0)
    sep = torch.tensor([tok.sep_token_id])
    block = torch.cat([torch.randint(10, len(tok), (11,)), sep, torch.randint(10, len(tok), (13,)), sep])
    packed = MLMCollator(tok, seed=1, mlm_probability=0.3, document_mask=True)([{"input_ids": block}])
    task = MLMTask(encoder="bert-tiny", vocab_size=len(tok),
                   encoder_config={"hidden_dropout": 0.0, "attention_dropout": 0.0}).eval()
    texts = []
    writer = SimpleNamespace(add_figure=None, add_text=lambda tag, text, step: texts.append(text))
    trainer = SimpleNamespace(sanity_checking=False, is_global_zero=True, strategy=None, global_step=0,
                              loggers=[SimpleNamespace(experiment=writer)], datamodule=SimpleNamespace(tokenizer=tok))
    callback = MaskedPredictions(num_examples=1, top_k=1)
    callback.on_validation_batch_end(trainer, task, None, packed, 0)
    callback.on_validation_epoch_end(trainer, task)
    with torch.no_grad():
        probs, top = task._step(packed)[1].softmax(-1).max(-1)
    expected = [f"{tok.convert_ids_to_tokens(int(t))} {float(p):.2f} |" for p, t in zip(probs, top)]
    assert [row.split("| ", 2)[-1] for row in texts[0].splitlines() if row.startswith("| ") and "top" not in row] \
        == expected
