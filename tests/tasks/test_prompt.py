"""Prompt-based classification: templates, verbaliser scoring from the MLM head, few-shot sampling, and a zero-shot
test + PET fine-tuning through the CLI."""

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from bigmodel.commands.cli import BigModelCLI
from bigmodel.data import TextClassificationDataModule
from bigmodel.data.prompts import check_template, encode_prompts
from bigmodel.data.sampling import examples_per_class
from bigmodel.data.tokenizer import train_wordpiece
from bigmodel.tasks import PromptClassificationTask
from bigmodel.tasks.prompt import verbalizer_scores
from tests.helpers import write_table

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
WORDS = "the movie was great terrible good bad fine plot acting it is a an and of to . , ?".split()


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece([" ".join(WORDS)] * 20, vocab_size=200)


def test_templates_keep_their_mask_and_cut_only_the_text(tokenizer):
    texts = ["the movie was great", " ".join(["plot"] * 50)]
    enc = encode_prompts(tokenizer, "{text} it was {mask} .", texts, None, max_length=16)
    assert enc["truncated"] == [False, True]
    first = tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
    assert first == ["[CLS]", "the", "movie", "was", "great", "it", "was", "[MASK]", ".", "[SEP]"]
    second = tokenizer.convert_ids_to_tokens(enc["input_ids"][1])
    assert len(second) == 16 and second[-5:] == ["it", "was", "[MASK]", ".", "[SEP]"]  # the template survives
    pairs = encode_prompts(tokenizer, "{text_a} ? [MASK] , {text_b}", ["the plot " * 20], ["bad acting"], 12)
    assert tokenizer.convert_ids_to_tokens(pairs["input_ids"][0])[-6:] == ["?", "[MASK]", ",", "bad", "acting", "[SEP]"]
    for template, message in [("{text} was good", "0 mask slots"), ("{text} {mask} {mask}", "2 mask slots"),
                              ("{txt} {mask}", "unknown fields"), ("{mask} .", "no {text} field"),
                              ("{text} {mask} {text_b}", "set data.init_args.text_pair_column")]:
        with pytest.raises(ValueError, match=message):
            check_template(template, has_pair=False)
    with pytest.raises(ValueError, match="template alone takes 8 tokens, max_length is 8"):
        encode_prompts(tokenizer, "{text} it was a good {mask} .", ["plot"], None, max_length=8)


def test_class_scores_are_the_mlm_logits_of_the_verbaliser_words(tokenizer):
    torch.manual_seed(0)
    task = PromptClassificationTask(
        verbalizer={"neg": ["terrible", "bad"], "pos": "great"}, num_classes=2, class_names=["neg", "pos"],
        vocab_size=len(tokenizer), encoder_config={"hidden_dropout": 0.0, "attention_dropout": 0.0}).eval()
    task.set_tokenizer(tokenizer)
    enc = encode_prompts(tokenizer, "{text} it was {mask} .", ["the plot", "the acting was fine and good"], None, 32)
    batch = tokenizer.pad(enc | {}, return_tensors="pt")
    with torch.no_grad():
        scores = task(dict(batch))
        hidden = task.net.encoder(batch["input_ids"], batch["attention_mask"]).last_hidden_state
        at_mask = hidden[batch["input_ids"] == tokenizer.mask_token_id]  # (2, H): one mask per prompt
        logits = task.net.mlm_head(at_mask, task.net.encoder.embeddings.word_embeddings.weight)
    ids = {w: tokenizer.convert_tokens_to_ids(w) for w in ("terrible", "bad", "great")}
    by_hand = torch.stack([torch.logsumexp(logits[:, [ids["terrible"], ids["bad"]]], -1), logits[:, ids["great"]]], -1)
    torch.testing.assert_close(scores, by_hand)
    assert torch.equal(verbalizer_scores(logits, torch.tensor([[ids["great"]]]), torch.tensor([[True]])),
                       logits[:, [ids["great"]]])
    with pytest.raises(ValueError, match=r"verbalizer word 'cinematography' \(class 'pos'\) is \["):
        PromptClassificationTask(verbalizer={"neg": "bad", "pos": "cinematography"}, num_classes=2,
                                 class_names=["neg", "pos"], vocab_size=len(tokenizer)).set_tokenizer(tokenizer)
    with pytest.raises(ValueError, match=r"verbalizer names \['neg'\] but the classes are \['neg', 'pos'\]"):
        PromptClassificationTask(verbalizer={"neg": "bad"}, num_classes=2, class_names=["neg", "pos"],
                                 vocab_size=len(tokenizer)).set_tokenizer(tokenizer)
    same = r"verbalizer gives the word 'bad' to both class 'neg' \('bad'\) and class 'pos' \('BAD'\): a word may"
    with pytest.raises(ValueError, match=same):  # one logit cannot score two classes apart
        PromptClassificationTask(verbalizer={"neg": ["terrible", "bad"], "pos": ["great", "BAD"]}, num_classes=2,
                                 class_names=["neg", "pos"], vocab_size=len(tokenizer)).set_tokenizer(tokenizer)
    from bigmodel.tasks.prompt import verbalizer_ids

    twice = verbalizer_ids(tokenizer, {"neg": ["bad", "Bad", "terrible"], "pos": ["great"]}, ["neg", "pos"])
    assert twice == [[ids["bad"], ids["terrible"]], [ids["great"]]]  # once each: no log 2 for a repeated word
    with pytest.raises(ValueError, match=r"at least one word \(class 'pos' has no words\)"):
        PromptClassificationTask(verbalizer={"neg": "bad", "pos": []}, num_classes=2, class_names=["neg", "pos"],
                                 vocab_size=len(tokenizer))


def test_few_shot_sampling_is_balanced_seeded_and_shared_by_any_task(tmp_path, tokenizer):
    labels = ["a"] * 30 + ["b"] * 10 + ["c"] * 5
    chosen = examples_per_class(labels, 4, seed=1)
    assert sorted(labels[i] for i in chosen) == ["a"] * 4 + ["b"] * 4 + ["c"] * 4 and chosen == sorted(chosen)
    assert chosen == examples_per_class(labels, 4, seed=1) != examples_per_class(labels, 4, seed=2)
    with pytest.raises(ValueError, match=r"fewer examples of \{'c': 5\}; lower it"):
        examples_per_class(labels, 6, seed=0)

    rows = [(f"the movie {i} was {'great' if i % 3 else 'bad'}", "pos" if i % 3 else "neg") for i in range(60)]
    train = write_table(tmp_path / "train.csv", rows)
    tokenizer.save_pretrained(tmp_path / "tok")
    made = {}
    for template in (None, "{text} it was {mask} ."):  # a head and a prompt: the same 2 x 3 examples
        dm = TextClassificationDataModule(tokenizer=str(tmp_path / "tok"), train_files=train, template=template,
                                          train_examples_per_class=3, validation_fraction=0.2, seed=7)
        dm.setup("fit")
        made[template] = dm.datasets["train"]
        assert sorted(dm.datasets["train"]["labels"]) == [0, 0, 0, 1, 1, 1] and len(dm.datasets["validation"]) == 12
    plain = [tokenizer.decode(ids, skip_special_tokens=True) for ids in made[None]["input_ids"]]
    prompted = [tokenizer.decode(ids, skip_special_tokens=True) for ids in made["{text} it was {mask} ."]["input_ids"]]
    assert [p + " it was." for p in plain] == [p.replace(" .", ".") for p in prompted]


def test_zero_shot_test_then_pet_fine_tuning_through_the_cli(mlm_checkpoint, tmp_path, monkeypatch, capsys):
    """The offline recipe: its zero-shot accuracy equals the MLM's cloze answers counted by hand; a few-shot fit
    saves a prompt checkpoint that test and predict read back, and export writes its MLM with the template and
    verbalizer in config.json (transformers loads it offline; the line says it does not apply them)."""
    monkeypatch.chdir(tmp_path)
    recipe = str(EXPERIMENTS / "quickstart" / "prompt_pydoc_topics.yaml")
    source = ["--model.init_args.init_from", mlm_checkpoint, "--data.init_args.tokenizer", mlm_checkpoint,
              "--trainer.enable_progress_bar", "false", "--data.init_args.max_length", "64"]
    zero = BigModelCLI(args=["test", "-c", recipe, *source])
    model, dm = zero.model.eval(), zero.datamodule
    hits = total = 0
    with torch.no_grad():
        for batch in dm.test_dataloader():
            ids = batch["input_ids"]
            hidden = model.net.encoder(ids, batch["attention_mask"]).last_hidden_state[ids == dm.tokenizer.mask_token_id]
            vocab = model.net.mlm_head(hidden, model.net.encoder.embeddings.word_embeddings.weight)
            words = [[dm.tokenizer.convert_tokens_to_ids(w) for w in model.verbalizer[c]] for c in model.class_names]
            scores = torch.stack([vocab[:, w].logsumexp(-1) for w in words], -1)
            hits += (scores.argmax(-1) == batch["labels"]).sum().item()
            total += len(ids)
    assert zero.trainer.callback_metrics["test/acc"].item() == pytest.approx(hits / total, abs=1e-6)

    fit = BigModelCLI(args=["fit", "-c", recipe, *source, "--data.init_args.train_examples_per_class", "2",
                            "--trainer.max_epochs", "2", "--trainer.num_sanity_val_steps", "0"])
    assert len(fit.datamodule.datasets["train"]) == 2 * 8 and fit.trainer.global_step == 2  # one batch of 16 per epoch
    config = yaml.safe_load(open(Path(fit.trainer.log_dir) / "config.yaml"))
    assert config["data"]["init_args"]["train_examples_per_class"] == 2  # recorded in the run's config
    last = Path(fit.trainer.log_dir).parent / "checkpoints" / "last.ckpt"
    meta = torch.load(last, weights_only=True)["bigmodel"]
    assert meta["task"] == "prompt" and meta["verbalizer"] == fit.model.verbalizer
    texts = tmp_path / "texts.txt"
    texts.write_text("The for statement is used to iterate over the elements of a sequence.\n")
    BigModelCLI(args=["predict", "-c", recipe, "--ckpt_path", str(last), "--data.init_args.predict_files", str(texts),
                      "--predictions.output", str(tmp_path / "pred.csv"), "--trainer.enable_progress_bar", "false"])
    row, = csv.DictReader(open(tmp_path / "pred.csv"))
    assert row["text"].startswith("The for statement") and row["class_name"] in fit.model.class_names
    assert sum(float(v) for k, v in row.items() if k.startswith("prob_")) == pytest.approx(1, abs=1e-4)

    import transformers

    from bigmodel.commands.export import export

    capsys.readouterr()
    out = export(str(last), str(tmp_path / "exported"))
    assert capsys.readouterr().out.strip().endswith(
        "config.json's bigmodel_prompt holds the template and verbalizer, which transformers' BertForMaskedLM does not "
        "apply: fill the template, read the logits at its mask and score each class by its words' logits "
        "(log-sum-exp), or classify with bigmodel test/predict --ckpt_path")
    prompt = json.loads((out / "config.json").read_text())["bigmodel_prompt"]
    assert prompt["template"] == fit.datamodule.hparams.template and "{mask}" in prompt["template"]
    assert prompt["verbalizer"] == fit.model.verbalizer and prompt["class_names"] == fit.model.class_names
    hf = transformers.AutoModelForMaskedLM.from_pretrained(out, local_files_only=True)
    assert type(hf).__name__ == "BertForMaskedLM" and hf.config.bigmodel_prompt == prompt
