"""MLMTask's loss, token accuracy and validation sums ignore the padding of the masked positions (MLMCollator's
``masked_positions_multiple_of``): the same numbers as the unpadded batch."""

import torch

from bigmodel.data.collators import MLMCollator
from bigmodel.data.tokenizer import train_wordpiece
from bigmodel.monitoring import MaskedPredictions
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
