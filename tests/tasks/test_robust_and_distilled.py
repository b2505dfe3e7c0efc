"""Adversarial training (FGM/PGD on the embedding output) and knowledge distillation on the classification task."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bigmodel.commands.cli import BigModelCLI
from bigmodel.nn.adversarial import AdversarialConfig, Adversary, embedding_layer
from bigmodel.nn.distillation import distillation_loss
from bigmodel.tasks import ClassificationTask
from bigmodel.tasks.classification import load_teacher

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
QUICK = EXPERIMENTS / "quickstart"


def _text_task(**kw):
    torch.manual_seed(0)
    return ClassificationTask(num_classes=3, vocab_size=100, classifier_dropout=0.0,
                              encoder_config={"hidden_dropout": 0.0, "attention_dropout": 0.0}, **kw)


def _batch():
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(4, 10, dtype=torch.long)
    mask[1, 6:] = 0
    return {"input_ids": torch.randint(5, 100, (4, 10), generator=g), "attention_mask": mask,
            "labels": torch.tensor([0, 1, 2, 1])}


def test_fgm_steps_epsilon_along_the_gradient_and_never_touches_the_embeddings():
    task = _text_task(adversarial={"method": "fgm", "epsilon": 0.5})
    batch = _batch()
    weights = task.net.encoder.embeddings.word_embeddings.weight.detach().clone()
    total = task.training_step(batch, 0)

    # by hand: the gradient of the clean loss at the word-embedding output, normalised per example
    layer = embedding_layer(task.net)
    out = layer(batch["input_ids"]).detach().requires_grad_()
    handle = layer.register_forward_hook(lambda m, i, o: out)
    clean = F.cross_entropy(task(batch), batch["labels"])
    grad, = torch.autograd.grad(clean, out)
    handle.remove()
    delta = 0.5 * grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1)
    handle = layer.register_forward_hook(lambda m, i, o: o + delta)
    adversarial = F.cross_entropy(task(batch), batch["labels"])
    handle.remove()
    torch.testing.assert_close(total, clean + adversarial)
    assert adversarial > clean  # uphill
    total.backward()
    assert torch.equal(task.net.encoder.embeddings.word_embeddings.weight, weights)  # perturbed outputs, not weights
    assert task.net.encoder.embeddings.word_embeddings.weight.grad is not None


def test_pgd_stays_in_the_epsilon_ball_and_works_on_a_vit_but_not_a_cnn():
    from bigmodel.nn import SmallCNN, VisionTransformer

    vit = VisionTransformer(4, "vit-tiny", {"image_size": 8, "patch_size": 2, "num_channels": 1, "num_layers": 1,
                                            "hidden_size": 32, "num_heads": 2, "intermediate_size": 64})
    assert embedding_layer(vit) is vit.encoder.embeddings.proj  # the patch projection's output
    adversary = Adversary(AdversarialConfig(method="pgd", epsilon=0.3, steps=4, alpha=0.3))
    images, labels = torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 3])
    norms = []
    with adversary.attach(embedding_layer(vit)):
        clean = F.cross_entropy(vit(images), labels)

        def perturbed():
            norms.append(adversary.delta.flatten(1).norm(dim=1))
            return F.cross_entropy(vit(images), labels)

        loss = adversary.loss(clean, perturbed)
    assert len(norms) == 4 and all((n <= 0.3 + 1e-5).all() for n in norms) and loss > clean
    torch.testing.assert_close(norms[0], torch.full((3,), 0.3))  # one step of alpha = epsilon: on the edge
    with pytest.raises(ValueError, match="SmallCNN has none: use a text model or the ViT"):
        embedding_layer(SmallCNN(10))
    with pytest.raises(ValueError, match="set compile: false"):
        _text_task(adversarial={"method": "fgm"}, compile=True)
    with pytest.raises(ValueError, match="choose fgm or pgd"):
        AdversarialConfig(method="free")


def test_distillation_loss_is_t_squared_kl_to_the_teachers_softened_probabilities():
    student, teacher = torch.randn(5, 4), torch.randn(5, 4)
    p = (teacher / 3).softmax(-1)
    by_hand = 9 * (p * (p.log() - (student / 3).log_softmax(-1))).sum(-1).mean()
    torch.testing.assert_close(distillation_loss(student, teacher, 3.0), by_hand)
    assert distillation_loss(teacher, teacher, 2.0).abs() < 1e-6


def test_a_cnn_teaches_the_digits_vit_through_the_cli(tmp_path, monkeypatch):
    """The recipe overlay: the teacher runs only in fit, in eval mode, and never enters the student's checkpoint."""
    monkeypatch.chdir(tmp_path)
    quick = ["--trainer.max_steps", "3", "--trainer.val_check_interval", "3", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
             "--trainer.enable_model_summary", "false"]
    BigModelCLI(args=["fit", "-c", str(QUICK / "digits_cnn.yaml"), *quick])
    student = BigModelCLI(args=["fit", "-c", str(QUICK / "digits_vit.yaml"), "-c",
                                str(QUICK / "digits_vit_distilled.yaml"), *quick])
    teacher = student.model._teacher
    assert type(teacher.net).__name__ == "SmallCNN" and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    assert "train/distill_loss" in student.trainer.callback_metrics
    saved = torch.load(tmp_path / "runs" / "digits-vit-distilled" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["hyper_parameters"]["distill_from"] == "runs/digits-cnn/checkpoints/best.ckpt"
    assert all(k.startswith("net.encoder.") or k.startswith("net.head") for k in saved["state_dict"]), \
        sorted(k for k in saved["state_dict"] if not k.startswith("net."))[:3]
    tested = BigModelCLI(args=["test", "-c", str(QUICK / "digits_vit.yaml"), "-c",
                               str(QUICK / "digits_vit_distilled.yaml"), "--ckpt_path", "best", *quick[4:]])
    assert tested.model._teacher is None  # not read outside fit
    with pytest.raises(ValueError, match=r"has the classes \['0', .*\], the student \['a', 'b'\]"):
        load_teacher("runs/digits-cnn/checkpoints/best.ckpt", ClassificationTask(
            num_classes=2, class_names=["a", "b"], vocab_size=10))


def test_distillation_settings_without_a_teacher_are_refused_by_fit():
    """distill_weight or distill_temperature with no distill_from trained on the labels alone, silently."""
    from types import SimpleNamespace

    student = ClassificationTask(num_classes=3, vocab_size=100, distill_weight=0.9)
    student.trainer = SimpleNamespace(datamodule=SimpleNamespace(hparams={}), ckpt_path=None,
                                      strategy=SimpleNamespace(root_device=torch.device("cpu")))
    with pytest.raises(ValueError) as err:
        student.setup("fit")
    assert str(err.value) == ("distill_weight 0.9 set, but distill_from is unset, so nothing would be distilled: set "
                              "model.init_args.distill_from to the teacher's checkpoint, or drop them")
    student.setup("test")  # a test reads no teacher: the settings are a record of how it was trained
    plain = ClassificationTask(num_classes=3, vocab_size=100)
    plain.trainer = student.trainer
    plain.setup("fit")


def test_a_prompt_teacher_is_refused_saying_why(tmp_path):
    """A PET model answers at its template's mask: on the student's plain-text batches it has nothing to read (its
    forward refuses them), so distill_from refuses the checkpoint, naming the template, at setup."""
    import lightning

    from bigmodel.data.tokenizer import train_wordpiece
    from bigmodel.tasks import PromptClassificationTask

    tokenizer = train_wordpiece(["the plot was good and the acting bad"] * 20, vocab_size=120)
    teacher = PromptClassificationTask(verbalizer={"neg": "bad", "pos": "good"}, num_classes=2,
                                       class_names=["neg", "pos"], vocab_size=len(tokenizer))
    teacher.set_tokenizer(tokenizer)
    plain = dict(tokenizer(["the plot was good"], return_tensors="pt"))  # what the student's data module builds
    with pytest.raises(ValueError, match="the batch has no mask_index"):
        teacher(plain)
    ckpt = {"state_dict": teacher.state_dict(), "hyper_parameters": dict(teacher.hparams),
            "pytorch-lightning_version": lightning.__version__,
            "datamodule_hyper_parameters": {"template": "{text} It was {mask}."}}
    teacher.on_save_checkpoint(ckpt)
    path = str(tmp_path / "pet.ckpt")
    torch.save(ckpt, path)
    with pytest.raises(ValueError) as err:
        load_teacher(path, ClassificationTask(num_classes=2, class_names=["neg", "pos"], vocab_size=len(tokenizer)))
    assert str(err.value) == (f"distill_from {path!r} is a prompt (PET) checkpoint: it scores the mask of its template "
                              "'{text} It was {mask}.', which the student's data (plain texts) does not build; "
                              "distil from a classification checkpoint (e.g. one fine-tuned from the same MLM)")
    with pytest.raises(ValueError) as err:  # a prompt student: the teacher would read its templates
        load_teacher(path, teacher)
    assert str(err.value) == ("distill_from with a prompt (PET) student: the teacher would read the student's filled "
                              "templates, not the plain texts it was trained on; distil into a classification "
                              "student (model.class_path bigmodel.tasks.ClassificationTask), or drop distill_from")


def test_a_teacher_with_fewer_positions_than_the_data_is_refused_at_setup(tmp_path):
    """The student's positions were checked against data.max_length at setup, the teacher's were not: a batch longer
    than the teacher's table failed in its embedding mid-training. Now setup refuses, naming the teacher."""
    from types import SimpleNamespace

    import lightning

    teacher = ClassificationTask(num_classes=3, vocab_size=100, encoder_config={"max_position_embeddings": 16})
    ckpt = {"state_dict": teacher.state_dict(), "hyper_parameters": dict(teacher.hparams),
            "pytorch-lightning_version": lightning.__version__}
    teacher.on_save_checkpoint(ckpt)
    path = str(tmp_path / "teacher.ckpt")
    torch.save(ckpt, path)

    def set_up(**data):
        student = ClassificationTask(num_classes=3, vocab_size=100, distill_from=path)  # bert-tiny: 512 positions
        student.trainer = SimpleNamespace(datamodule=SimpleNamespace(hparams=data), ckpt_path=None,
                                          strategy=SimpleNamespace(root_device=torch.device("cpu")))
        student.setup("fit")
        return student

    assert set_up(max_length=16)._teacher.config.max_position_embeddings == 16  # exactly the teacher's positions
    with pytest.raises(ValueError) as err:
        set_up(max_length=17)
    assert str(err.value) == (f"data.init_args.max_length 17 is longer than the teacher's 16 positions (distill_from "
                              f"{path!r}: max_position_embeddings 16); set data.init_args.max_length to at most 16, "
                              "or distil from a teacher with more positions")
    assert [e.name for e in err.traceback][-4:] == ["set_up", "setup", "load_teacher", "check_data_length"]
