"""``bigmodel sweep``: one experiment over seeds (and a small grid), each run fitted then tested in a directory of its
own, summarised as mean ± std so that a number in a README can be traced back to the runs that made it.

    bigmodel sweep -c experiments/quickstart/digits_vit.yaml --seeds 0 1 2 \\
        [--grid model.init_args.lr=1e-3,3e-3] [--out runs/sweeps/digits_vit] \\
        [--summary_dir experiments/results/digits_vit] [--parallel gpus] [any fit override, e.g. --trainer.max_epochs 5]

Layout: ``<out>/<point>/seed<k>/`` holds ``checkpoints/``, ``fit/`` (TensorBoard logs and the resolved
``config.yaml``), ``test/test_metrics.json``, ``fit.log`` and ``test.log`` (a grid: also ``validate/``, the pass on the
tested checkpoint whose ``--select`` metric chooses the point reported as ``selected``); ``<out>/summary.{json,csv,md}`` (also
written to ``--summary_dir``) hold every test metric per grid point as mean ± sample std with n, the per-seed
values, wall times, failed seeds with their one-line error, the exact command, each run's resolved config, the code's
git commit, the device and the versions.

Each run is a process of its own (a crash or an out-of-memory kill fails that seed only, and is reported). Ctrl-C,
SIGTERM or SIGHUP (its terminal closed; ignored under ``nohup``) stops the sweep (the running runs at a saved step, no
further one starts; exit 130 / 143 / 129). Running the same sweep again skips seeds whose test result exists (and says
so) and resumes a stopped fit from its ``last.ckpt``; a sweep whose settings differ from those the runs in ``--out``
were made with stops before running anything (``reuse``). A sweep in which runs failed never replaces a summary
holding more finished runs, and one with none finished writes nothing to ``--summary_dir``. The experiment's logger
must be Lightning's TensorBoard or CSV logger (the default): the sweep sets its directory per run.

The command line is here; ``plan`` (the runs), ``runner`` (their processes), ``reuse`` (what a rerun reuses) and
``summary`` do the work, and ``bigmodel.commands.results`` renders the summary as it renders the results table.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from pathlib import Path

from bigmodel.commands.results import summary_markdown
from bigmodel.commands.sweep.plan import Run, parse_grid, plan
from bigmodel.commands.sweep.runner import Sweep
from bigmodel.commands.sweep.summary import kept_reason, summarise, write_summary


def project_path(argument: str) -> str:
    """A path argument (or ``--key=path``) relative to the working directory, the project root, so that a summary
    holds no absolute path of the machine that ran it (a reader runs its command as written)."""
    key, sep, value = argument.rpartition("=") if argument.startswith("-") else ("", "", argument)
    if not os.path.isabs(value):
        return argument
    return key + sep + os.path.relpath(value)


def visible_gpus() -> list[str]:
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bigmodel sweep", allow_abbrev=False,
                                description="Fit and test one experiment per seed (x grid point); summarise.",
                                epilog="Any other argument (e.g. --trainer.max_epochs 5) is passed to every fit and test.")
    p.add_argument("-c", "--config", action="append", required=True, help="experiment YAML (repeatable, as for fit)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help="a setting to vary (repeatable)")
    p.add_argument("--out", help="sweep directory (default: runs/sweeps/<the configs' names joined by +>)")
    p.add_argument("--summary_dir", help="also write summary.{json,csv,md} here (e.g. experiments/results/<name>)")
    p.add_argument("--parallel", default="1",
                   help="runs at a time (default 1), each with its share of the CPUs (OMP_NUM_THREADS unless set); "
                        "'gpus': one run per visible GPU, each seeing only its GPU")
    p.add_argument("--select", default="val/loss", metavar="METRIC",
                   help="with --grid: the validation metric that chooses the point to report (default val/loss; "
                        "each run is validated on the checkpoint it is tested with; test metrics never choose)")
    p.add_argument("--select_by", choices=("mean", "seed"), default="mean",
                   help="with --grid: the point with the best mean (default), or each seed's best point")
    p.add_argument("--vary", choices=("model", "data", "both"), default="model",
                   help="what each seed sets: seed_everything (model: initialisation, dropout; default), "
                        "data.init_args.seed (data: order, hold-out, draws; the model seed stays --model_seed), or both")
    p.add_argument("--model_seed", type=int, default=0, help="seed_everything for every run with --vary data")
    p.add_argument("--test_ckpt", choices=("best", "last", "none"), default="best",
                   help="the checkpoint each run is tested with (default best; last when there is no best); none: "
                        "no fit, test the config's own weights (init_from: a zero-shot prompt, a published model)")
    return p


def stopped_line(runs: list[Run], signum: int) -> str:
    """The one line a stopped sweep ends with: what stopped it, where its runs are, and how to go on."""
    stopped = [r for r in runs if r.status == "interrupted"]
    saved = sum((r.checkpoints / "last.ckpt").is_file() for r in stopped)
    pending = sum(r.status == "pending" for r in runs)
    return (f"bigmodel: sweep stopped by {signal.Signals(signum).name}: {len(stopped)} run{'s' * (len(stopped) != 1)} "
            f"stopped ({saved} with a last.ckpt to resume from), {pending} not started; to resume, run the same "
            "command again")


def main(argv: list[str]) -> None:
    from bigmodel.run import errors

    args, overrides = parser().parse_known_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        raise ValueError(f"--seeds {' '.join(map(str, args.seeds))} repeats a seed; give each seed once")
    for o in overrides:
        if o.split("=", 1)[0] in ("--seed_everything", "--ckpt_path", "--checkpoint.dirpath") or o in ("fit", "test"):
            raise ValueError(f"{o!r}: the sweep sets seeds, checkpoints and subcommands itself; use --seeds")
    errors.check_config_files([a for c in args.config for a in ("-c", c)])
    for config in args.config:
        if not os.path.isfile(config):
            raise FileNotFoundError(f"config {config!r} does not exist")
    gpus = None
    if args.parallel == "gpus":
        gpus = visible_gpus()
        if not gpus:
            raise ValueError("--parallel gpus: no GPU is visible; leave --parallel out to run the seeds one by one")
        parallel = len(gpus)
    elif args.parallel.isdigit() and int(args.parallel) >= 1:
        parallel = int(args.parallel)
    else:
        raise ValueError(f"--parallel {args.parallel!r}: give a number of runs at a time, or 'gpus'")
    stems = "+".join(dict.fromkeys(Path(c).stem for c in args.config))  # each combination of files its own
    out = Path(project_path(args.out or os.path.join("runs", "sweeps", stems)))
    grid = parse_grid(args.grid)
    runs = plan(out, grid, args.seeds)
    validate = len({r.point for r in runs}) > 1  # a grid: each run validated, and a point chosen on validation
    sweep = Sweep([project_path(c) for c in args.config], overrides, runs, parallel, gpus, args.test_ckpt, validate,
                  args.vary, args.model_seed)
    sweep.execute()
    command = shlex.join(["bigmodel", "sweep", *map(project_path, argv)])
    summary = summarise(runs, command, test_ckpt=args.test_ckpt, select=args.select if validate else None,
                        select_by=args.select_by, planned=sweep.settings)
    directories = [out] + ([Path(args.summary_dir)] if args.summary_dir else [])
    kept = {d: kept_reason(summary, d, results=d != out) for d in directories}
    write_summary(summary, *(d for d in directories if not kept[d]))
    print(summary_markdown(summary))
    if any(not reason for reason in kept.values()):
        print(f"sweep: summary in {', '.join(str(d / 'summary.md') for d in directories if not kept[d])}")
    for reason in filter(None, kept.values()):
        print(f"sweep: {reason}")
    if sweep.stop_signal is not None:
        print(stopped_line(runs, sweep.stop_signal), file=sys.stderr)
        sys.exit(128 + sweep.stop_signal)
    failed = sum(r.status == "failed" for r in runs)
    if failed:
        print(f"bigmodel: error: {failed} of {len(runs)} runs failed (listed above; their logs are in {out})",
              file=sys.stderr)
        sys.exit(1)
