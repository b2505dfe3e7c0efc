"""bigmodel: a hand-written Transformer encoder, BERT-style pretraining and fine-tuning, run by Lightning's CLI."""

__version__ = "0.1.0"
