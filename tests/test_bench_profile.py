"""``bench --profile``: where the CPU MLM step's time goes, by category (each event's self time counted once), and
``--levers``: the candidate levers against the fp32 step, per interleaved round."""

import pytest
import torch
from torch import nn
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

from bigmodel.commands import bench
from bigmodel.commands.bench import levers as bench_levers
from bigmodel.commands.bench import profile as bench_profile
from bigmodel.commands.bench import categories
from bigmodel.commands.bench.categories import NAMES, OTHER, assign, categorise, module_labels
from bigmodel.commands.bench.profile import table
from bigmodel.nn import EncoderConfig, dropout


def test_smoke_profile_categories_add_up_to_the_measured_step(capsys, monkeypatch):
    results = []
    profile_step = bench_profile.profile_step
    monkeypatch.setattr(bench_profile, "profile_step", lambda *a, **k: results.append(profile_step(*a, **k)) or
                        results[-1])
    bench.main(["--profile", "--smoke"])
    out = capsys.readouterr().out
    (result,) = results
    assert [r["contender"] for r in result["rows"]] == ["bigmodel MLM, plain PyTorch",
                                                         "bigmodel MLMTask, Lightning Trainer"]
    for r in result["rows"]:
        p = r["profile"]
        assert list(p["categories"]) == NAMES
        # self times: nothing counted twice, nothing lost, against the wall clock of the profiled steps
        assert sum(p["categories"].values()) == pytest.approx(p["profiled_s"], rel=1e-6)
        assert p["profiled_s"] == pytest.approx(p["wall_s"], rel=0.1, abs=1e-3)
        assert all(p["categories"][cat] > 0 for cat in NAMES)  # every category has ops at this shape
        assert sum(p["other"].values()) == pytest.approx(p["categories"][OTHER], rel=1e-6)
        assert r["ceiling_fraction"] == pytest.approx(
            r["tokens_per_s"] * r["useful_flops_per_token"] / result["matmul_peak_flops"])
    rendered = table(result)
    for text in (out, rendered):
        assert all(f"| {cat} |" in text for cat in NAMES)
        assert "fp32 matmul ceiling" in text and "everything else (ms/step)" in text


def test_backward_nodes_take_the_label_of_their_forward_op():
    # dropout's mask product and its backward are "aten::mul"/"MulBackward0": only the module label names them;
    # the same product outside any label stays in everything else, the Linear and its backward are matrix products
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5)).train()
    x = torch.randn(4, 8)
    with module_labels(model), profile(activities=[ProfilerActivity.CPU]) as prof:
        with record_function(categories.STEP):
            (model(x) * torch.full((8,), 3.0)).sum().backward()
    events = list(prof.events())
    assigned = assign(events)
    nodes = sorted(((e.sequence_nr, cat) for e, cat in assigned
                    if e.name == "autograd::engine::evaluate_function: MulBackward0"))
    assert [cat for _, cat in nodes] == ["dropout", OTHER]  # made in this order: dropout's, then the "* 3"
    assert {cat for e, cat in assigned if "AddmmBackward0" in e.name} == {"matrix products"}
    times, other, total = categorise(events)
    assert sum(times.values()) == pytest.approx(total, rel=1e-6) and times["dropout"] > 0
    assert len(model[1]._forward_hooks) == 0 and len(model[1]._forward_pre_hooks) == 0  # labels removed


def test_category_names_follow_the_op_names():
    assert categories.category_of("aten::_scaled_dot_product_flash_attention_for_cpu") == \
        "attention (SDPA, softmax, masks)"
    assert categories.category_of("aten::log_softmax") == "MLM head and loss"  # not attention's softmax
    assert categories.category_of("aten::embedding_dense_backward") == "embedding forward/backward"
    assert categories.category_of("autograd::engine::evaluate_function: NativeLayerNormBackward0") == \
        "normalisation and activations"
    assert categories.category_of("aten::addmm") == "matrix products"
    assert categories.category_of("aten::add") is None


def test_levers_ratios_are_per_round_against_the_fp32_baseline(monkeypatch):
    cfg = EncoderConfig.from_name("bert-tiny", num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64,
                                  vocab_size=100, max_position_embeddings=32)
    seen = {}
    interleave = bench_levers.interleave
    monkeypatch.setattr(bench_levers, "interleave", lambda *a, **k: seen.setdefault("t", interleave(*a, **k)))
    threads = torch.get_num_threads()
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # so the one-thread row is there on any machine
    try:
        out = bench_levers.levers(cfg, 2, 16, window=1, rounds=2, matmul_size=64, compile=False)
    finally:
        torch.set_num_threads(threads)
    assert [r["lever"] for r in out["rows"]] == ["fp32 eager (baseline)", "bf16 autocast", bench_levers.TORCH_MASKS,
                                                 "1 thread (not 2)"]
    assert dropout.CHEAP_CPU_MASK  # the torch-masks row put the switch back
    base = seen["t"]["fp32 eager (baseline)"]["windows"]
    for r in out["rows"]:
        windows = seen["t"][r["lever"]]["windows"]
        assert r["speedups"] == pytest.approx([b / w for b, w in zip(base, windows)]) and len(windows) == 2
    assert out["rows"][0]["median_speedup"] == 1.0
    assert set(out["flags"]) == {"amx_bf16", "amx_tile", "avx512_bf16", "avx512f"}


def test_profile_refuses_options_it_does_not_take(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--profile", "--dtype", "bf16"])
    assert "--profile times the fp32 CPU step and takes no --dtype or --compile" in capsys.readouterr().err
