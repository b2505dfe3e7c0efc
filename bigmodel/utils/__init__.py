"""Foundations any layer may import: seeding, the Hugging Face hub and the packaged model, number formatting,
figures, TensorBoard lookup, exception chains, and the map of module paths that moved. Nothing here imports another
``bigmodel`` package or Lightning, so the pure-PyTorch model code can use it too."""
