import json

from bigmodel.bench import compare, comparison_table
from bigmodel.nn import EncoderConfig


def test_compare_times_every_contender_and_writes_json(tmp_path):
    text = EncoderConfig.from_name("bert-tiny", num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64,
                                   vocab_size=100, max_position_embeddings=32)
    vision = EncoderConfig.from_name("vit-cifar-tiny", num_layers=1, hidden_size=32, num_heads=2,
                                     intermediate_size=64, image_size=8, patch_size=4)
    path = tmp_path / "bench.json"
    result = compare(text, batch=2, seq=16, steps=2, warmup=1, rounds=1, vision=vision, vision_batch=2,
                     device="cpu", json_path=str(path), command="test")

    names = [r["contender"] for r in result["rows"]]
    assert names[:3] == ["bigmodel MLM, plain PyTorch", "bigmodel MLMTask, Lightning Trainer",
                         "HF BertForMaskedLM (sdpa)"]
    assert "bigmodel ViT" in names  # timm's row beside it only where timm is installed
    assert all(r["per_s"] > 0 and len(r["windows_s_per_step"]) == 1 for r in result["rows"])
    hf = result["rows"][2]
    assert hf["ratio"] == 1.0 and hf["computed_flops"] > hf["useful_flops"] == result["rows"][0]["useful_flops"]
    written = json.loads(path.read_text())
    assert {"date", "command", "device", "threads", "precision", "versions", "text", "vision", "timing", "notes",
            "rows"} <= written.keys()
    assert {"torch", "transformers", "lightning", "timm"} <= written["versions"].keys()
    assert written["rows"] == result["rows"]
    assert comparison_table(result).count("\n") == 1 + len(result["rows"])


def test_adversarial_rows_time_clean_fgm_and_pgd():
    from bigmodel.bench import adversarial_rows

    text = EncoderConfig.from_name("bert-tiny", num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64,
                                   vocab_size=100, max_position_embeddings=32)
    rows = adversarial_rows(text, batch=2, seq=8, steps=1, warmup=1, rounds=1, device="cpu")
    assert list(rows) == ["clean", "FGM", "PGD-3"] and all(ms > 0 for ms in rows.values())
