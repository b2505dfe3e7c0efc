import json
from types import SimpleNamespace

import torch

from bigmodel.run.callbacks import PredictionWriter


def test_jsonl_predictions_keep_non_ascii_text_readable(tmp_path):
    out = tmp_path / "predictions.jsonl"
    trainer = SimpleNamespace(global_rank=0, log_dir=str(tmp_path))
    module = SimpleNamespace(class_names=["负面", "正面"])
    batch = {"text": ["这部电影很好"], "pred": torch.tensor([1]), "probs": torch.tensor([[0.25, 0.75]])}
    PredictionWriter(str(out)).write_on_epoch_end(trainer, module, [batch], None)
    line = out.read_text(encoding="utf-8").strip()
    assert "这部电影很好" in line and "\\u" not in line
    assert json.loads(line) == {"text": "这部电影很好", "label": 1, "class_name": "正面", "prob_负面": 0.25,
                                "prob_正面": 0.75}
