import json
import importlib.util
import time
from pathlib import Path

import pytest
import torch

from bigmodel.commands.bench import suite as bench_suite
from bigmodel.commands.bench.compare import compare, comparison_table
from bigmodel.commands.bench.suite_parts import SKIPPED
from bigmodel.nn import EncoderConfig

ROOT = Path(__file__).resolve().parents[1]


def test_compare_counts_flops_ratios_and_mfu_from_its_rows(tmp_path):
    h, f, layers, vocab, seq, batch = 32, 64, 2, 100, 16, 2
    text = EncoderConfig.from_name("bert-tiny", num_layers=layers, hidden_size=h, num_heads=2, intermediate_size=f,
                                   vocab_size=vocab, max_position_embeddings=32)
    vision = EncoderConfig.from_name("vit-cifar-tiny", num_layers=1, hidden_size=32, num_heads=2,
                                     intermediate_size=64, image_size=8, patch_size=4)
    path = tmp_path / "bench.json"
    result = compare(text, batch=batch, seq=seq, steps=2, warmup=1, rounds=1, vision=vision, vision_batch=2,
                     device="cpu", json_path=str(path), command="test", matmul_size=64)

    rows = {r["contender"]: r for r in result["rows"]}
    assert list(rows)[:4] == ["bigmodel MLM, plain PyTorch", "bigmodel MLM, document masks",
                              "bigmodel MLMTask, Lightning Trainer", "HF BertForMaskedLM (sdpa)"]
    assert "bigmodel ViT" in rows  # timm's row beside it only where timm is installed
    # FLOPs per token, by hand: 6 x (weights used per token) + 3 x forward attention (QK^T and AV)
    dense = layers * (4 * h * h + 4 * h + 2 * h * f + f + h + 4 * h)  # qkv, proj, FFN, two LayerNorms
    head = h * h + h + 2 * h + vocab + vocab * h  # transform, LayerNorm, bias, the tied decoder
    fraction = int(0.15 * batch * seq) / (batch * seq)
    attention = 3 * 2 * 2 * layers * seq * h
    plain, hf = rows["bigmodel MLM, plain PyTorch"], rows["HF BertForMaskedLM (sdpa)"]
    assert plain["useful_flops"] == pytest.approx(6 * (dense + fraction * head) + attention)
    assert hf["computed_flops"] == pytest.approx(6 * (dense + head) + attention)
    assert hf["useful_flops"] == plain["useful_flops"] == rows["bigmodel MLMTask, Lightning Trainer"]["useful_flops"]
    assert rows["bigmodel MLM, document masks"]["useful_flops"] == plain["useful_flops"]
    assert result["text"]["mask_fraction"] == fraction
    # ratios and MFU follow from each row's own throughput, the reference's and the measured matmul ceiling
    peak = result["timing"]["matmul_peak_flops"]
    assert result["timing"]["matmul_dtype"] == "float32" and peak > 0
    for r in result["rows"]:
        assert r["per_s"] == pytest.approx((batch * seq if r["unit"] == "tokens" else 2) / (r["ms_per_step"] / 1000))
        assert r["mfu"] == pytest.approx(r["per_s"] * r["useful_flops"] / peak)
        if r["family"] == "text":
            assert r["ratio"] == pytest.approx(r["per_s"] / hf["per_s"])
    assert hf["ratio"] == 1.0
    if importlib.util.find_spec("timm") is None:  # no timm (the dev venv): nothing to divide the ViT's by
        assert rows["bigmodel ViT"]["ratio"] is None and "timm VisionTransformer" not in rows
    else:  # the GPU machine's image has timm: the ViT's ratio is to timm's row
        timm = rows["timm VisionTransformer"]
        assert timm["ratio"] == 1.0 and rows["bigmodel ViT"]["ratio"] == pytest.approx(
            rows["bigmodel ViT"]["per_s"] / timm["per_s"])
    written = json.loads(path.read_text())
    assert written["rows"] == result["rows"] and written["command"] == "test"
    assert {"torch", "transformers", "lightning", "timm"} <= written["versions"].keys()
    table = comparison_table(result)
    assert table.count("\n") == 1 + len(result["rows"])
    assert f"useful MFU (of {peak / 1e12:,.3g} TFLOP/s float32 matmul)" in table
    assert f"| {100 * plain['mfu']:.1f} % |" in table.splitlines()[2]


def _tiny_modernbert(**overrides) -> EncoderConfig:
    """Every ModernBERT switch (RoPE, GeGLU, no biases, layer 0 without its own norm, a final norm) with local
    layers 1 and 2 seeing 4 tokens on either side of 16."""
    return EncoderConfig.from_name("modernbert-mini", **{
        "num_layers": 4, "hidden_size": 32, "num_heads": 2, "intermediate_size": 48, "vocab_size": 100,
        "max_position_embeddings": 64, "sliding_window": 8, **overrides})


def test_the_modernbert_reference_computes_bigmodels_loss_on_the_same_batch():
    """The reference row of a rope preset is transformers' ModernBertForMaskedLM with bigmodel's weights (through
    the export path): the same loss as bigmodel's plain step, at the first step and after an AdamW step."""
    from bigmodel.commands.bench.compare import hf_mlm_step, hf_reference_name
    from bigmodel.commands.bench.measure import mlm_batch, mlm_step

    cfg = _tiny_modernbert()
    data = mlm_batch(cfg.vocab_size, 2, 16, "cpu")
    step, model, _ = mlm_step(cfg, 2, 16, "fp32", "cpu", data=data)
    hf_step, hf, _ = hf_mlm_step(cfg, data, "fp32", "cpu", False, model)
    assert type(hf).__name__ == "ModernBertForMaskedLM" and hf.config.layer_types[1] == "sliding_attention"
    assert hf_reference_name(cfg) == "HF ModernBertForMaskedLM (sdpa)"
    assert hf_reference_name(EncoderConfig.from_name("bert-tiny")) == "HF BertForMaskedLM (sdpa)"
    for _ in range(2):
        assert hf_step().item() == pytest.approx(step().item(), rel=1e-5)


def test_document_ids_mark_documents_as_the_mlm_collator_does(tmp_path):
    """k documents per 128 tokens: the ids ``MLMCollator(document_mask=True)`` gives a block whose documents each
    end in [SEP] every 128 / k tokens."""
    from bigmodel.commands.bench.measure import document_ids
    from bigmodel.commands.bench.suite_parts import _tokenizer
    from bigmodel.data.collators import MLMCollator

    tokenizer = _tokenizer(100, str(tmp_path))
    block = torch.randint(5, 100, (256,))
    block[31::32] = tokenizer.sep_token_id
    collated = MLMCollator(tokenizer, seed=0, document_mask=True)([{"input_ids": block}] * 2)
    assert torch.equal(document_ids(2, 256, 4, "cpu"), collated["document_ids"])
    with pytest.raises(ValueError, match="documents per 128 tokens must be 1 to 128, got 0"):
        document_ids(2, 256, 0, "cpu")


def test_compare_at_a_modernbert_shape_counts_glu_flops_and_keeps_documents_apart():
    """A rope preset compares against ModernBertForMaskedLM; GeGLU's input projection (2 x intermediate wide) counts
    in the FLOPs; the document-mask row trains another function (documents kept apart) on the same useful FLOPs."""
    from bigmodel.commands.bench.measure import document_ids, mlm_batch, mlm_step

    h, f, layers, vocab, seq, batch = 32, 48, 4, 100, 16, 2
    cfg = _tiny_modernbert()
    result = compare(cfg, batch=batch, seq=seq, steps=1, warmup=1, rounds=1, device="cpu", matmul_size=64,
                     documents=16, lightning=False)
    rows = {r["contender"]: r for r in result["rows"]}
    assert list(rows) == ["bigmodel MLM, plain PyTorch", "bigmodel MLM, document masks",
                          "HF ModernBertForMaskedLM (sdpa)"]
    # no biases; qkv, proj, GeGLU up (2f wide) and down; two norms a layer, none in layer 0's attention, a final one
    dense = layers * (4 * h * h + 3 * h * f + 2 * h) - h + h
    head = h * h + h + vocab + vocab * h  # transform, its norm, the decoder's bias, the tied decoder
    fraction = int(0.15 * batch * seq) / (batch * seq)
    attention = 3 * 2 * 2 * layers * seq * h  # local layers counted as full (noted)
    plain, documents = rows["bigmodel MLM, plain PyTorch"], rows["bigmodel MLM, document masks"]
    assert plain["useful_flops"] == pytest.approx(6 * (dense + fraction * head) + attention)
    assert documents["useful_flops"] == documents["computed_flops"] == plain["useful_flops"]
    assert rows["HF ModernBertForMaskedLM (sdpa)"]["computed_flops"] == pytest.approx(6 * (dense + head) + attention)
    assert any("counted in the FLOPs as full attention over 16 tokens" in n for n in result["notes"])
    assert result["text"]["reference"] == "HF ModernBertForMaskedLM (sdpa)"
    # the row's model keeps documents apart: the first document's logits ignore the second's tokens, and differ from
    # the unmasked model's (compared on logits: at this init the loss moves by ~1e-5, below any safe tolerance)
    torch.manual_seed(0)
    data = mlm_batch(vocab, batch, seq, "cpu")
    docs = document_ids(batch, seq, 16, "cpu")  # two 8-token documents a row
    other = data["input_ids"].clone()
    other[:, 8:] = (other[:, 8:] - 5 + 7) % (vocab - 5) + 5  # the second documents' tokens changed
    _, model, _ = mlm_step(cfg, batch, seq, "fp32", "cpu", data=data)
    first = torch.arange(batch * seq).view(batch, seq)[:, :8].reshape(-1)  # every position of the first documents
    with torch.no_grad():
        packed, packed_other, plain, plain_other = (model(ids, first, None, d) for ids, d in (
            (data["input_ids"], docs), (other, docs), (data["input_ids"], None), (other, None)))
    torch.testing.assert_close(packed, packed_other, rtol=0, atol=1e-6)
    assert (plain - plain_other).abs().max() > 1e-3 and (packed - plain).abs().max() > 1e-3


def test_adversarial_rows_time_clean_fgm_and_pgd():
    from bigmodel.commands.bench.adversarial import adversarial_rows

    text = EncoderConfig.from_name("bert-tiny", num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64,
                                   vocab_size=100, max_position_embeddings=32)
    rows = adversarial_rows(text, batch=2, seq=8, steps=1, warmup=1, rounds=1, device="cpu")
    assert list(rows) == ["clean", "FGM", "PGD-3"] and all(ms > 0 for ms in rows.values())


def test_cpu_smoke_suite_runs_every_part_and_writes_json_and_markdown(tmp_path, capsys):
    report = bench_suite.run_suite("cpu-smoke", tmp_path, command="smoke")
    parts = report["parts"]
    assert list(parts) == list(bench_suite.PARTS)
    assert {name: p["status"] for name, p in parts.items()} == {name: "ok" for name in bench_suite.PARTS}
    assert json.loads((tmp_path / "suite.json").read_text()) == json.loads(json.dumps(report, default=str))
    markdown = (tmp_path / "suite.md").read_text()
    assert markdown == bench_suite.markdown(report) + "\n" and markdown.strip() in capsys.readouterr().out
    assert "`smoke`" in markdown.splitlines()[0] and report["versions"]["torch"] in markdown.splitlines()[0]

    assert [r["dtype"] for r in parts["matmul"]["rows"]] == ["float32"]
    assert [r["contender"] for r in parts["compare"]["rows"]][:4] == [
        "bigmodel MLM, plain PyTorch", "bigmodel MLM, document masks", "bigmodel MLMTask, Lightning Trainer",
        "HF BertForMaskedLM (sdpa)"]
    assert parts["compare-compiled"]["rows"] == [{"contender": "every row + torch.compile",
                                                  "status": SKIPPED}]
    assert [r["contender"] for r in parts["compare-modernbert"]["rows"]] == [
        "bigmodel MLM, plain PyTorch", "bigmodel MLM, document masks", "HF ModernBertForMaskedLM (sdpa)",
        "every row + torch.compile"]
    assert parts["compare-modernbert"]["compare"]["text"]["sliding_window"] == 8
    graphs = parts["cuda-graphs"]["rows"]
    assert graphs[0]["step"] == "eager" and graphs[0]["x eager"] == 1.0
    assert [r.get("status") for r in graphs[1:]] == [SKIPPED] * 2
    fit = parts["fit-16-mixed"]["rows"][0]
    assert fit["finished"] and fit["last.ckpt"] and fit["steps"] == fit["of"] == 2
    sizes = bench_suite.SUITES["cpu-smoke"]
    fsdp = parts["fsdp"]["rows"]
    assert [(r["first step"], r["last step"]) for r in fsdp] == [(0, sizes.fsdp_steps),
                                                                 (sizes.fsdp_steps, sizes.fsdp_steps + 2)]
    assert fsdp[0]["saved"] == "file" and any(SKIPPED in n for n in parts["fsdp"]["notes"])
    for r in fsdp:  # the clipping ran: norms above 0.5 came out at 0.5
        assert r["max grad norm before clip"] > 0.5 and r["after (clip 0.5)"] == pytest.approx(0.5, rel=1e-4)
    cifar = parts["cifar-epoch"]["rows"]
    assert [r["s per epoch"] for r in cifar] == pytest.approx([49_000 // 2 * r["ms/step"] / 1000 for r in cifar])
    assert [r["Lightning loop"] for r in parts["nonfinite"]["rows"]] == ["nonfinite: stop", "nonfinite: off"]


def _fails(sizes, device, root):
    raise ValueError("a typo\nsecond line")


def _sleeps(sizes, device, root):
    time.sleep(30)


def test_a_failing_or_slow_part_is_recorded_and_the_rest_run(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_suite, "PARTS", {"bad": (_fails, "fails"), "slow": (_sleeps, "sleeps"),
                                               "matmul": bench_suite.PARTS["matmul"]})
    monkeypatch.setitem(bench_suite.SUITES["cpu-smoke"].budgets, "slow", 1.0)
    parts = bench_suite.run_suite("cpu-smoke", tmp_path)["parts"]
    assert parts["bad"]["status"] == "failed: ValueError: a typo" and "Traceback" in parts["bad"]["traceback"]
    assert parts["slow"]["status"] == "timed out after 1 s" and parts["slow"]["seconds"] < 10
    assert parts["matmul"]["status"] == "ok"
    with pytest.raises(ValueError, match="unknown parts \\['nope'\\]"):
        bench_suite.run_suite("cpu-smoke", tmp_path, ["nope"])


def test_readme_gpu_section_is_rendered_from_the_suite_output(tmp_path):
    from bigmodel.commands.results import update

    missing = bench_suite.readme_section(tmp_path / "none.json")
    assert missing.count("not measured: needs a GPU run") == len(bench_suite.PARTS)
    report = {"suite": "gpu", "device": "NVIDIA H200", "threads": 16, "python": "3.12.3", "date": "2026-12-07",
              "command": "c", "versions": {"torch": "2.11.0", "lightning": "2.6.6", "transformers": "5.17.0",
                                           "timm": "1.0"},
              "parts": {"matmul": {"status": "ok", "seconds": 3.0, "rows": [{"dtype": "bfloat16", "TFLOP/s": 790.4}],
                                   "notes": []}}}
    (tmp_path / "suite.json").write_text(json.dumps(report))
    section = bench_suite.readme_section(tmp_path / "suite.json")
    assert "| bfloat16 | 790 |" in section and "NVIDIA H200" in section
    notes = ROOT / "bigmodel/commands/bench/README.md"  # the committed section is up to date
    readme = notes.read_text(encoding="utf-8")
    committed = ROOT / "experiments/results/gpu_suite/suite.json"
    assert update(readme, bench_suite.readme_section(committed), str(notes), bench_suite.BEGIN,
                  bench_suite.END) == readme


def test_wheel_list_names_every_package_the_gpu_machine_lacks():
    wheels = (ROOT / "experiments/gpu/WHEELS.txt").read_text()
    requirements = {line.split("==")[0].split("[")[0]: line.split("==")[1].split()[0]
                    for line in (ROOT / "requirements.txt").read_text().splitlines() if "==" in line}
    for package in ("datasets", "jsonargparse"):
        assert f"{package}=={requirements[package]}" in wheels
    assert "pip download" in wheels and "--python-version 3.12" in wheels and "--suite gpu" in wheels


def test_bench_lengths_pads_as_each_row_promises(tmp_path, capsys):
    from bigmodel.commands.bench import lengths as bench_lengths

    words = ["alpha", "beta", "gamma", "delta"]
    lines = ["sentence\tlabel"] + [" ".join(words[i % 4:] + words[:i % 4]) + f"\t{i % 2}" for i in range(24)]
    train = tmp_path / "train.tsv"
    train.write_text("\n".join(lines) + "\n")
    bench_lengths.main(["--train-file", str(train), "--preset", "bert-tiny", "--batch-size", "4", "--max-length", "12",
                        "--steps", "1", "--warmup", "1", "--rounds", "1", "--wordpiece-vocab-size", "64"])
    out = capsys.readouterr().out
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in out.splitlines()
            if line.startswith("| bigmodel")}
    # every text is [CLS] + 4 words + [SEP] = 6 tokens: padded to 12 wastes half, to the longest nothing, to a
    # multiple of 8 a quarter
    assert {name: cells[1] for name, cells in rows.items()} == {
        "bigmodel max_length": "50%", "bigmodel longest": "0%", "bigmodel grouped": "0%", "bigmodel grouped/8": "25%"}
    assert {name: cells[2] for name, cells in rows.items()} == {
        "bigmodel max_length": "12.0", "bigmodel longest": "6.0", "bigmodel grouped": "6.0",
        "bigmodel grouped/8": "8.0"}
    assert rows["bigmodel max_length"][4].strip(" |") == "1.00x"


def test_bench_lengths_unpad_adds_an_unpadded_row_on_the_same_batches(tmp_path, capsys):
    from bigmodel.commands.bench import lengths as bench_lengths

    train = tmp_path / "train.tsv"
    train.write_text("sentence\tlabel\n" + "".join(f"{'alpha beta ' * (i % 3 + 1)}gamma\t{i % 2}\n" for i in range(16)))
    bench_lengths.main(["--train-file", str(train), "--preset", "bert-tiny", "--batch-size", "4", "--max-length", "12",
                        "--steps", "1", "--warmup", "1", "--rounds", "1", "--wordpiece-vocab-size", "64",
                        "--rows", "max_length", "--unpad"])
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in capsys.readouterr().out.splitlines()
            if line.startswith("| bigmodel")}
    assert list(rows) == ["bigmodel max_length", "bigmodel max_length unpad"]
    assert rows["bigmodel max_length unpad"][1:3] == rows["bigmodel max_length"][1:3]  # same batches, same padding


@pytest.mark.parametrize("argv, tool, defaults", [
    ([], "throughput", {"steps": 20, "warmup": 5}),  # the shape's defaults depend on the device: the test below
    (["--compare"], "compare", {"preset": "bert-mini", "batch_size": 32, "dtype": None, "steps": 2, "warmup": 2,
                                "rounds": 5}),
    (["--adversarial"], "adversarial", {"preset": "bert-mini", "batch_size": 32, "steps": 2, "warmup": 1,
                                        "rounds": 5}),
    (["--profile", "--levers"], "profile", {"preset": "bert-mini", "batch_size": 32, "steps": 2, "warmup": 2,
                                            "rounds": 5, "levers": True, "profiled_steps": 3}),
    (["--finetune", "full", "lora", "--dtype", "fp32"], "finetune", {"steps": 20, "warmup": 5}),  # shape: below
    (["--int8", "best.ckpt"], "int8", {"batch_size": 64, "warmup": 5}),
    (["--suite", "cpu-smoke", "--out", "x", "--compare"], "suite", {"preset": None, "rounds": None}),
    (["--compare", "--preset", "bert-tiny", "--warmup", "0"], "compare", {"preset": "bert-tiny", "warmup": 0}),
])
def test_bench_runs_the_tool_its_options_pick_with_that_tools_defaults(argv, tool, defaults, monkeypatch):
    """One command line for every tool (python -m bigmodel.commands.bench, the old python -m bigmodel.bench and
    `bigmodel bench`); an option left out takes the default of the tool that runs."""
    import importlib

    from bigmodel.commands import bench
    from bigmodel.commands.cli import main

    ran = []
    for _, module in bench.TOOLS:
        monkeypatch.setattr(importlib.import_module(f"bigmodel.commands.bench.{module}"), "from_args",
                            lambda p, args, module=module: ran.append((module, args)))
    bench.main(argv)
    main(["bench", *argv])
    (first, args), (second, via_cli) = ran
    assert first == second == tool
    assert {key: getattr(args, key) for key in defaults} == defaults
    assert (args.prog, args.argv) == ("python -m bigmodel.commands.bench", argv)
    assert (via_cli.prog, via_cli.argv) == ("bigmodel bench", argv)


def test_the_plain_bench_takes_the_shared_cpu_default_on_cpu_and_bert_base_on_a_gpu():
    """A bare `bigmodel bench` on CPU once timed bert-base bf16 at 64 x 128 (17 s a step): on CPU it takes the
    CPU default --compare, --profile and --adversarial share; on a GPU the README table's bert-base; given options
    win everywhere, and the options that took a default are named."""
    from bigmodel.commands.bench import resolve

    def resolved(argv, device):
        _, module, args = resolve(argv, device=device)
        assert module.__name__.endswith(".throughput")
        return {key: getattr(args, key) for key in ("preset", "batch_size", "seq_len", "dtype")}, args.defaulted

    cpu = {"preset": "bert-mini", "batch_size": 32, "seq_len": 128, "dtype": "fp32"}
    assert resolved([], "cpu") == (cpu, ["preset", "batch_size", "dtype", "steps", "warmup"])
    assert resolved([], "cuda")[0] == {"preset": "bert-base", "batch_size": 64, "seq_len": 128, "dtype": "bf16"}
    assert resolved(["--preset", "bert-base", "--dtype", "bf16"], "cpu") == (
        {**cpu, "preset": "bert-base", "dtype": "bf16"}, ["batch_size", "steps", "warmup"])
    assert resolved(["--batch-size", "8", "--dtype", "fp32"], "cuda")[0] == {
        "preset": "bert-base", "batch_size": 8, "seq_len": 128, "dtype": "fp32"}
    _, _, compare_args = resolve(["--compare"], device="cpu")  # the same CPU default as --compare's
    assert (compare_args.preset, compare_args.batch_size) == (cpu["preset"], cpu["batch_size"])


def test_the_plain_bench_on_cpu_says_which_defaults_it_took_and_how_to_ask_for_bert_base():
    from bigmodel.commands.bench.throughput import cpu_defaults_note

    assert cpu_defaults_note(["preset", "batch_size", "dtype", "steps", "warmup"]) == (
        "note: CPU defaults for the options not given: --preset bert-mini --batch-size 32 --dtype fp32; the GPU "
        "default (about 17 s a step on two CPU cores) is --preset bert-base --batch-size 64 --dtype bf16")
    assert cpu_defaults_note(["batch_size"]) == ("note: CPU defaults for the options not given: --batch-size 32; "
                                                 "on a GPU they default to --batch-size 64")
    vit = cpu_defaults_note(["batch_size", "dtype"])  # --preset vit-tiny given: bert-base is none of its business
    assert vit == ("note: CPU defaults for the options not given: --batch-size 32 --dtype fp32; on a GPU they default "
                   "to --batch-size 64 --dtype bf16")
    assert "17 s" not in cpu_defaults_note(["preset", "batch_size"])  # bert-base's time is at its own batch, bf16
    assert cpu_defaults_note(["steps", "warmup"]) is None  # every shape option given: nothing to say


def test_the_plain_bench_on_cpu_prints_a_dash_for_the_peak_memory_it_cannot_read(monkeypatch, capsys):
    """CPU has no allocator statistics: the column said 'nan' in every row (a new user's walk)."""
    from bigmodel.commands.bench import resolve, throughput

    measured = {"ms_per_step": 2.0, "tokens_per_s": 1000.0, "tflops": 0.01, "peak_mem_gb": float("nan")}
    monkeypatch.setattr(throughput, "default_device", lambda: "cpu")
    monkeypatch.setattr(throughput, "run", lambda *args, **kwargs: measured)
    p, _, args = resolve(["--preset", "bert-tiny", "--batch-size", "2", "--dtype", "fp32"], device="cpu")
    throughput.from_args(p, args)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| SDPA")]
    assert rows and all(line.endswith("| – |") for line in rows), rows


def test_bench_finetune_takes_the_shared_cpu_default_on_cpu_and_says_so(monkeypatch, capsys):
    """``bench --finetune`` on CPU timed bert-base at batch 64 (minutes a step) while every other tool takes the
    shared CPU default: now it does too, with the note naming it and the GPU's bert-base 64 (unchanged there)."""
    from bigmodel.commands.bench import finetune, resolve
    from bigmodel.commands.bench.measure import CPU_DEFAULTS

    def resolved(argv, device):
        _, module, args = resolve(["--finetune", "full", *argv], device=device)
        assert module is finetune and args.dtype == "fp32"  # its one precision, left out or not (it was refused)
        return {key: getattr(args, key) for key in ("preset", "batch_size", "steps", "warmup")}, args

    cpu, args = resolved([], "cpu")
    assert cpu == {**CPU_DEFAULTS, "steps": 20, "warmup": 5} == {"preset": "bert-mini", "batch_size": 32, "steps": 20,
                                                                 "warmup": 5}
    assert resolved([], "cuda")[0] == {"preset": "bert-base", "batch_size": 64, "steps": 20, "warmup": 5}
    assert resolved(["--preset", "bert-tiny"], "cpu")[0]["preset"] == "bert-tiny"  # given options win
    measured = {"trainable": 2, "total": 4, "optimizer_bytes": 0, "weight_bytes": 0, "peak_bytes": 0, "built_bytes": 0,
                "ms_per_step": 1.0}
    monkeypatch.setattr(finetune, "default_device", lambda: "cpu")
    monkeypatch.setattr(finetune, "finetune_rows", lambda cfg, modes, *rest: {mode: measured for mode in modes})
    finetune.from_args(None, args)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("note: CPU defaults for the options not given: --preset bert-mini --batch-size 32; on a GPU "
                      "they default to --preset bert-base --batch-size 64")
    assert out[1].startswith("bert-mini + 2-class head, batch 32 x 128 tokens, fp32")


def test_bench_finetune_offers_every_finetune_mode_and_measures_each_with_its_own_head():
    """The choices are the project's list of modes (pooler_probe was missing); a linear probe trains one linear
    layer on [CLS], a pooler probe BERT's tanh pooler and that layer, as training builds them."""
    from typing import get_args

    from bigmodel.commands.bench import parser
    from bigmodel.commands.bench.finetune import run_finetune
    from bigmodel.nn.peft import Finetune, LoRAConfig

    finetune = next(a for a in parser()._actions if a.dest == "finetune")
    assert list(finetune.choices) == list(get_args(Finetune))
    assert parser().parse_args(["--finetune", "pooler_probe"]).finetune == ["pooler_probe"]
    h = 32
    cfg = EncoderConfig.from_name("bert-tiny", num_layers=1, hidden_size=h, num_heads=2, intermediate_size=64,
                                  vocab_size=100, max_position_embeddings=16)
    rows = {mode: run_finetune(cfg, mode, 2, 8, 1, 0, "cpu", LoRAConfig(rank=2)) for mode in
            ("linear_probe", "pooler_probe")}
    assert rows["linear_probe"]["trainable"] == 2 * h + 2
    assert rows["pooler_probe"]["trainable"] == h * h + h + 2 * h + 2


def test_bench_adversarial_through_the_bigmodel_command(capsys):
    from bigmodel.commands.cli import main

    main(["bench", "--adversarial", "--preset", "bert-tiny", "--vocab-size", "100", "--batch-size", "2", "--seq-len",
          "8", "--steps", "1", "--rounds", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("bert-tiny + 2-class head, batch 2 x 8, fp32") and "median of 1 interleaved" in lines[0]
    assert "of 1 steps after 1" in lines[0]  # the adversarial tool's own warm-up default
    assert [line.split(" | ")[0] for line in lines[3:]] == ["| clean", "| FGM", "| PGD-3"]


def test_the_suites_forkserver_preloads_the_suite_module():
    import importlib

    assert importlib.import_module(bench_suite.PRELOAD) is bench_suite


def test_the_explicit_softmax_row_trains_the_same_step_as_sdpa():
    """The throughput table's ``explicit softmax path`` row routes every layer through the attention-weights path:
    the same loss as the SDPA row on the same batch (it once crashed on an argument the encoder added)."""
    from bigmodel.commands.bench.measure import mlm_batch, mlm_step

    cfg = EncoderConfig.from_name("bert-tiny", num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64,
                                  vocab_size=100, max_position_embeddings=32)
    data = mlm_batch(cfg.vocab_size, 2, 16, "cpu")
    losses = [mlm_step(cfg, 2, 16, "fp32", "cpu", explicit=explicit, padded=True, data=data)[0]().item()
              for explicit in (False, True)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_the_bench_keeps_a_presets_own_vocabulary_unless_told_otherwise():
    from bigmodel.commands.bench import parser
    from bigmodel.commands.bench.measure import bench_config

    def config(*argv):
        return bench_config(parser().parse_args(list(argv)))

    assert config("--preset", "modernbert-mini").vocab_size == 50368  # was 30,522 from the option's default
    assert config("--preset", "bert-mini").vocab_size == 30522
    assert config("--preset", "modernbert-mini", "--vocab-size", "100").vocab_size == 100
    assert config("--preset", "bert-mini", "--seq-len", "1024").max_position_embeddings == 1024


def test_the_default_throughput_tool_runs_a_text_preset_with_its_own_vocabulary(capsys):
    """`bigmodel bench --preset P` without --vocab-size: once a TypeError from a None vocabulary."""
    from bigmodel.commands.cli import main

    main(["bench", "--preset", "bert-tiny", "--batch-size", "2", "--seq-len", "8", "--steps", "1", "--warmup", "0",
          "--dtype", "fp32"])
    out = capsys.readouterr().out
    assert out.startswith("bert-tiny, batch 2 x 8 tokens, fp32") and "| SDPA, no padding mask (flash) |" in out
    if not torch.cuda.is_available():  # batch and precision left out: the CPU default's, and a note says so
        main(["bench", "--preset", "bert-tiny", "--seq-len", "8", "--steps", "1", "--warmup", "0"])
        note, header = capsys.readouterr().out.splitlines()[:2]
        assert note.startswith("note: CPU defaults for the options not given: --batch-size 32 --dtype fp32; ")
        assert header.startswith("bert-tiny, batch 32 x 8 tokens, fp32, CPU")
