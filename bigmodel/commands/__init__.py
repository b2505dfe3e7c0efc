"""The commands, one module (or package) each: ``cli`` (fit, validate, test, predict through Lightning's CLI),
``sweep``, ``results``, ``compare``, ``export`` and ``bench`` (one module per benchmark tool). The top layer: a
command may import anything below it, nothing below imports a command. This file imports nothing, so ``bigmodel --help``
prints before Lightning loads."""

COMMANDS = {
    "fit": "train a task from a YAML config (resume with --ckpt_path last)",
    "validate": "one pass over the validation split (--ckpt_path best, last or a file)",
    "test": "test metrics, confusion matrix and per-class scores (--ckpt_path ...)",
    "predict": "predictions to CSV/JSONL for data.init_args.predict_files (text) or predict_dir (images)",
    "sweep": "fit + test over seeds (and a grid): summary.csv/.md with mean ± std",
    "results": "the results table (Markdown) from sweep summaries",
    "compare": "sweeps against a reference: paired differences, 95 % intervals, verdicts",
    "export": "a checkpoint as a Hugging Face directory that transformers loads",
    "bench": "throughput (CPU: bert-mini 32x128 fp32; GPU: bert-base 64x128 bf16), vs HF/timm, fine-tuning, int8",
}

OVERVIEW = f"""usage: bigmodel <command> -c experiments/<file>.yaml [-c more.yaml] [--key value ...]

Transformer experiments from YAML files, run by Lightning's CLI: masked/causal LM pretraining, text and image
classification (full, LoRA, BitFit, probe, prompts, distillation), on CPU or GPUs.

commands:
{chr(10).join(f"  {name:<9} {text}" for name, text in COMMANDS.items())}

experiments:
  experiments/quickstart/   offline, CPU, minutes (start here: pretrain_pydoc.yaml, digits_cnn.yaml)
  experiments/finetune/, pretrain/, vision/   SST-2, WikiText-2, CIFAR-10 recipes
  experiments/trainer/      fragments to add with a second -c (cpu, gpu-bf16, ddp-4gpu-bf16, debug)

options:
  bigmodel fit -c <file> --print_config          the whole resolved configuration
  bigmodel fit --model.help ClassificationTask   a task's settings (MLMTask, CausalLMTask, PromptClassificationTask)
  bigmodel fit --data.help TextClassificationDataModule   a data module's (CorpusDataModule, ImageDataModule)
  bigmodel <command> --help                      every option of a command (long: the Trainer's come first)
"""
