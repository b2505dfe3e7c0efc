"""``bigmodel compare``: paired and Welch intervals as scipy computes them, verdicts, a power estimate that holds,
grid points chosen on validation only, and what randomness a seed controls."""

import json
import math
from pathlib import Path

import pytest
from scipy import stats

from bigmodel.commands import compare, held_settings, intervals, summary_notes
from bigmodel.commands.results import summary_markdown
from bigmodel.commands.sweep import project_path
from bigmodel.commands.sweep.plan import Run, plan
from bigmodel.commands.sweep.runner import Sweep
from bigmodel.commands.sweep.summary import summarise

ROOT = Path(__file__).resolve().parents[1]
FULL = str(ROOT / "experiments" / "results" / "sst2_budget_full")


def _summary(directory: Path, values: dict[str, float], seed_key: str = "seed_everything", config: str = "",
             ckpt: str | None = None) -> str:
    """A one-point summary of test/acc and test/loss per seed, with each run's config naming the seeds it used (and
    ``config``'s lines), and the checkpoint (``ckpt``: best, last) each run was tested on."""
    monitor = "checkpoint: {monitor: val/acc}\n"  # as every resolved config records it
    runs = [{"seed": int(s), "config": monitor + config + (f"{seed_key}: {s}\ndata: {{init_args: {{seed: 42}}}}\n" if
             seed_key == "seed_everything" else f"seed_everything: 0\ndata: {{init_args: {{seed: {s}}}}}\n"),
             "ckpt_path": ckpt and f"runs/{directory.name}/default/seed{s}/checkpoints/{ckpt}.ckpt"} for s in values]
    metrics = {}
    for name, sign in (("test/acc", 1), ("test/loss", -1)):
        per_seed = {s: 0.5 + sign * (v - 0.5) for s, v in values.items()}
        metrics[name] = {"n": len(values), "mean": sum(per_seed.values()) / len(values), "std": None,
                         "values": per_seed}
    summary = {"command": "bigmodel sweep", "date": "2026-11-24", "code": None, "devices": [], "versions": {},
               "runs": runs, "points": [{"point": "default", "grid": {}, "seeds": [int(s) for s in values],
                                         "metrics": metrics, "failed": {}, "unfinished": {}}]}
    directory.mkdir(parents=True)
    (directory / "summary.json").write_text(json.dumps(summary))
    return str(directory)


REFERENCE = {"0": 0.731, "1": 0.744, "2": 0.728, "3": 0.739}
OTHER = {"3": 0.751, "1": 0.749, "0": 0.742, "2": 0.741}  # another order: pairs go by seed, not by position


def test_paired_interval_is_scipys_and_the_table_says_which_is_better(tmp_path, capsys):
    reference, other = _summary(tmp_path / "full", REFERENCE), _summary(tmp_path / "lora", OTHER)
    seeds = list(REFERENCE)
    a, b = [OTHER[s] for s in seeds], [REFERENCE[s] for s in seeds]
    expected = stats.ttest_rel(a, b).confidence_interval(0.95)
    d = compare.compare_points("test/acc", compare.load(other)["points"][0], compare.load(reference)["points"][0],
                               pair=True)
    assert d.paired and d.n == 4
    assert (d.low, d.high) == pytest.approx((expected.low, expected.high), abs=1e-12)
    assert d.std == pytest.approx(stats.tstd([x - y for x, y in zip(a, b)]), abs=1e-12)
    compare.main([reference, other, "--metric", "all"])
    lines = capsys.readouterr().out.splitlines()
    acc = next(line for line in lines if "| test/acc |" in line)
    loss = next(line for line in lines if "| test/loss |" in line)
    assert acc.startswith(f"| lora − full | test/acc | +0.0103 [{compare.number(expected.low)}, "
                          f"{compare.number(expected.high)}] |") and "| paired | lora better |" in acc
    assert "| paired | lora better |" in loss  # the loss fell: lower is better for a loss
    assert "the seed sets the model's initialisation" in lines[-1] and "data seed fixed at 42" in lines[-1]


def test_one_primary_metric_by_default_and_the_table_says_what_its_intervals_cover(tmp_path, capsys):
    """The default compares the test counterpart of the checkpoint monitor only; every row says 95 % per comparison,
    unadjusted, over seed variance on a fixed test set; several rows get Holm-adjusted verdicts too."""
    reference, other = _summary(tmp_path / "full", REFERENCE), _summary(tmp_path / "lora", OTHER)
    compare.main([reference, other])
    out = capsys.readouterr().out
    assert [line.split(" | ")[1] for line in out.splitlines() if line.startswith("| lora − full")] == ["test/acc"]
    assert "Metric: test/acc, the test counterpart of the reference's checkpoint monitor val/acc" in out
    assert ("95 % per comparison, unadjusted; they cover the seed-to-seed variance on a fixed test set, not the test "
            "set's own sampling error.") in out
    assert compare.HOLM not in out  # one comparison: nothing to adjust
    compare.main([reference, other, "--metric", "all"])
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith(f"| {compare.HOLM} |") and "Holm, familywise 5 % over the 2 comparisons" in out
    no_monitor = json.loads(Path(reference, "summary.json").read_text())
    no_monitor["runs"] = [dict(r, config="seed_everything: 0\n") for r in no_monitor["runs"]]
    Path(reference, "summary.json").write_text(json.dumps(no_monitor))
    with pytest.raises(ValueError, match="record no checkpoint monitor to take the primary metric from; name one "
                                         "with --metric"):
        compare.table([reference, other])


def _difference(p: float, mean: float = 0.01, df: int = 4) -> intervals.Difference:
    """A paired difference whose two-sided t-test gives ``p``."""
    se = mean / stats.t.isf(p / 2, df)
    half = stats.t.ppf(0.975, df) * se
    return intervals.Difference("test/acc", mean, se * math.sqrt(df + 1), mean - half, mean + half, df + 1, True, None,
                              se, df)


def test_holm_steps_down_from_the_smallest_p():
    """p = 0.01, 0.04, 0.03 over m = 3: 0.01 <= 0.05/3 holds, 0.03 <= 0.05/2 does not, so only the first; each alone
    is resolved at 5 %."""
    rows = [_difference(p) for p in (0.01, 0.04, 0.03)]
    assert [d.p_value for d in rows] == pytest.approx([0.01, 0.04, 0.03])
    assert all(d.resolved for d in rows)
    assert intervals.holm(rows) == [True, False, False]
    assert intervals.holm([_difference(p) for p in (0.012, 0.02, 0.049)]) == [True, True, True]  # 0.05/3, /2, /1
    assert rows[1].verdict("a", "b", resolved=False) == "not resolved at 5 seeds"


def test_unpaired_sweeps_get_welchs_interval_as_scipy_and_say_so(tmp_path, capsys):
    reference = _summary(tmp_path / "a", REFERENCE)
    other = _summary(tmp_path / "b", {"5": 0.70, "6": 0.76, "7": 0.73})  # other seeds
    data_seeded = _summary(tmp_path / "c", OTHER, seed_key="data")  # same seed values, other randomness
    expected = stats.ttest_ind([0.70, 0.76, 0.73], list(REFERENCE.values()), equal_var=False).confidence_interval()
    compare.main([reference, other, data_seeded, "--metric", "test/acc"])
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| b − a"))
    assert f"[{compare.number(expected.low)}, {compare.number(expected.high)}]" in row
    assert "unpaired (different seeds): Welch" in row and "not resolved at 3 seeds" in row
    assert "unpaired (their seeds control different randomness): Welch" in out
    d = intervals.welch("test/acc", [0.70, 0.76, 0.73], list(REFERENCE.values()))
    assert (d.low, d.high) == pytest.approx((expected.low, expected.high), abs=1e-12)
    assert "- c: the seed sets the data order" in out and "model seed fixed at 0" in out


def _t_power(n: int, noncentrality: float, df: int) -> float:
    """A two-sided 5 % t-test's power, written out here from scipy's noncentral t."""
    t = stats.t.ppf(0.975, df)
    return 1 - stats.nct.cdf(t, df, noncentrality) + stats.nct.cdf(-t, df, noncentrality)


def test_the_seeds_needed_give_80_percent_power_by_the_noncentral_t_and_one_fewer_does_not():
    """Paired: df n − 1, noncentrality d √n; Welch with n per sweep: df 2n − 2, δ / √((sa² + sb²) / n). The normal
    approximation claimed 2 seeds at d = 2 (power 18 %) and 8 at d = 1 (68 %)."""
    d = intervals.paired("test/acc", {"0": 0.75, "1": 0.74, "2": 0.77}, {"0": 0.74, "1": 0.74, "2": 0.74})
    effect, n = abs(d.mean) / d.std, d.seeds_needed
    assert n > 3 and _t_power(n, effect * math.sqrt(n), n - 1) >= 0.8 > _t_power(n - 1, effect * math.sqrt(n - 1), n - 2)
    assert intervals._seeds_needed(2.0, 1.0) == 5 and intervals._seeds_needed(1.0, 1.0) == 10
    assert intervals._seeds_needed(-1.0, 1.0) == 10  # the sign does not matter
    a, b = [0.70, 0.76, 0.73], [0.74, 0.78, 0.77, 0.79]
    w, spread = intervals.welch("test/acc", a, b), stats.tvar(a) + stats.tvar(b)
    n = w.seeds_needed
    assert n > 3 and _t_power(n, abs(w.mean) / math.sqrt(spread / n), 2 * n - 2) >= 0.8 > _t_power(
        n - 1, abs(w.mean) / math.sqrt(spread / (n - 1)), 2 * n - 4)
    assert compare.HEADER[-1] == "seeds for 80 % power at the observed effect (post hoc)"
    assert intervals._seeds_needed(1e-9, 1.0) == intervals.MANY_SEEDS + 1  # next to no difference: "> 10000" at once
    assert compare.row(intervals.paired("m", {"0": 0.1, "1": 0.0}, {"0": 0.0, "1": 0.1 - 1e-9}), "a", "b")[-1] == "> 10000"


def test_a_sweep_compared_with_itself_has_no_spread_to_assess(capsys):
    compare.main([FULL, FULL + "/summary.json", "--percent", "--metric", "all"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| sst2_budget_full − ")]
    assert len(rows) == 5  # acc, f1, loss, precision, recall
    for row in rows:
        assert ("| 0.0 [0.0, 0.0] | 0 | 3 | paired | no spread: cannot assess | – | no spread: cannot assess |"
                in row)
    with pytest.raises(ValueError, match="at least one to compare"):
        compare.table([FULL])


def test_zero_spread_is_not_a_resolved_difference():
    """Every seed 0.01 apart: a zero-width interval, which says nothing about the seed variance -- not "better"."""
    d = intervals.paired("test/acc", {"0": 0.5, "1": 0.25}, {"0": 0.25, "1": 0.0})  # exact in binary: sd exactly 0
    assert d.std == 0 and not d.resolved and d.verdict("a", "b") == "no spread: cannot assess"
    assert d.seeds_needed is None and intervals.holm([d]) == [False] and d.p_value == 1
    d = intervals.paired("test/acc", {"0": 0.8, "1": 0.9}, {"0": 0.7, "1": 0.8})  # 0.1 apart up to float rounding
    assert 0 < d.std < 1e-15 and d.verdict("a", "b") == "no spread: cannot assess" and d.seeds_needed is None
    w = intervals.welch("test/acc", [0.5, 0.5], [0.25, 0.25])
    assert not w.resolved and w.verdict("a", "b") == "no spread: cannot assess" and w.seeds_needed is None


def test_every_bounds_sign_shows():
    """+0.46 [−0.03, +0.95] points, not +0.5 [−0.0, +1.0] (the README's FGM row); a zero is 0.0, never −0.0."""
    d = intervals.Difference("test/acc", 0.004607, None, -0.000295, 0.009509, 3, True, None, 0.0011, 2)
    assert compare.interval(d, 100.0, 1) == "+0.46 [−0.03, +0.95]"
    assert compare.interval(d) == "+0.0046 [−0.0003, +0.0095]"
    d = intervals.Difference("test/acc", -1e-10, None, -0.043, 0.043, 3, True, None, 0.01, 2)
    assert compare.interval(d, 100.0, 1) == "0.0 [−4.3, +4.3]"
    d = intervals.Difference("test/acc", 0.5, None, -0.0000004, 1.0, 3, True, None, 0.1, 2)
    assert compare.interval(d) == "+0.5000000 [−0.0000004, +1.0000000]"


def _run(point: str, seed: int, test: float, val: float) -> Run:
    return Run(point, {"model.init_args.lr": point}, seed, f"runs/{point}/seed{seed}", "done",
               metrics={"test/acc": test}, validation={"val/acc": val, "val/loss": 1 - val},
               config=f"seed_everything: {seed}\n")


def test_a_grid_sweep_selects_on_validation_and_never_on_test():
    """Point 1e-3 wins on validation, 3e-3 on test: the summary reports 1e-3's test numbers, and says why."""
    runs = [_run("1e-3", 0, 0.80, 0.90), _run("1e-3", 1, 0.82, 0.70), _run("3e-3", 0, 0.95, 0.85),
            _run("3e-3", 1, 0.97, 0.72)]
    summary = summarise(runs, "bigmodel sweep", select="val/acc")
    chosen = summary["selected"]
    assert chosen["selected"] == {"metric": "val/acc", "goal": "max", "by": "mean", "point": "1e-3",
                                  "n": {"1e-3": 2, "3e-3": 2}}
    assert chosen["metrics"]["test/acc"]["values"] == {"0": 0.80, "1": 0.82}
    assert summary["points"][0]["validation"]["val/acc"]["mean"] == pytest.approx(0.80)
    assert summarise(runs, "x", select="val/loss")["selected"]["selected"]["goal"] == "min"  # loss: lower
    by_seed = summarise(runs, "x", select="val/acc", select_by="seed")["selected"]
    assert by_seed["selected"]["points"] == {"0": "1e-3", "1": "3e-3"}
    assert by_seed["metrics"]["test/acc"]["values"] == {"0": 0.80, "1": 0.97}
    assert ("Selected on validation (val/acc, max, by mean): 1e-3 (n per point: 1e-3 2, 3e-3 2)"
            in summary_markdown(summary))
    with pytest.raises(ValueError, match="a test metric cannot choose"):
        summarise(runs, "x", select="test/acc")
    summary = json.loads(json.dumps(summary))  # as read back from summary.json
    assert compare.point_of(summary)["selected"]["point"] == "1e-3"  # a results row's default point


def test_point_names_a_grid_point_and_a_sweep_without_a_grid_is_compared_on_its_own(tmp_path, capsys):
    """``compare grid plain --point 3e-3``: the grid's 3e-3 against the plain sweep's only point (it was refused,
    saying 'point:', the results file's key); a grid given no point it has is one line naming --point."""
    runs = [_run("1e-3", 0, 0.80, 0.90), _run("1e-3", 1, 0.82, 0.70), _run("3e-3", 0, 0.95, 0.85),
            _run("3e-3", 1, 0.97, 0.72)]
    (tmp_path / "grid").mkdir()
    (tmp_path / "grid" / "summary.json").write_text(json.dumps(summarise(runs, "bigmodel sweep", select="val/acc")))
    plain = _summary(tmp_path / "plain", {"0": 0.70, "1": 0.72})
    compare.main([plain, str(tmp_path / "grid"), "--point", "3e-3"])
    row = next(line for line in capsys.readouterr().out.splitlines() if "| test/acc |" in line)
    assert "+0.2500" in row  # (0.95 - 0.70 + 0.97 - 0.72) / 2: the grid's 3e-3, not its selected 1e-3
    assert row.startswith("| grid (3e-3) − plain | test/acc |")  # the row names the point compared
    with pytest.raises(ValueError, match=r"say which grid point with --point, one of 1e-3, 3e-3$"):
        compare.table([plain, str(tmp_path / "grid")], point="1e-2")


@pytest.mark.parametrize("by, label, chosen", [
    ("mean", "1e-3, selected on val/acc", "1e-3 (n per point: 1e-3 2, 3e-3 2)"),
    ("seed", "each seed's best point, selected on val/acc", "seed 0: 1e-3, seed 1: 3e-3")])
def test_a_grid_sweep_compared_without_point_names_the_point_validation_selected(tmp_path, by, label, chosen):
    """Without --point a grid sweep is compared at the point its validation selected: the row says which (as its
    summary.md does), and the notes how it was chosen."""
    runs = [_run("1e-3", 0, 0.80, 0.90), _run("1e-3", 1, 0.82, 0.70), _run("3e-3", 0, 0.95, 0.85),
            _run("3e-3", 1, 0.97, 0.72)]
    (tmp_path / "grid").mkdir()
    (tmp_path / "grid" / "summary.json").write_text(json.dumps(summarise(runs, "bigmodel sweep", select="val/acc",
                                                                         select_by=by)))
    plain = _summary(tmp_path / "plain", {"0": 0.70, "1": 0.72})
    lines = compare.table([str(tmp_path / "grid"), plain], ["test/acc"]).splitlines()
    assert lines[2].startswith(f"| plain − grid ({label}) | test/acc |")
    assert lines[lines.index("Grid points:") + 1] == (f"- grid: Selected on validation (val/acc, max, by {by}): "
                                                      f"{chosen}; test metrics chose nothing.")


def _val(point: str, seed: int, val_loss: float | None, test: float = 0.8) -> Run:
    """A run with val/loss ``val_loss``; None: the run failed."""
    if val_loss is None:
        return Run(point, {"model.init_args.lr": point}, seed, f"runs/{point}/seed{seed}", "failed",
                   error="fit exit 1: boom", config=f"seed_everything: {seed}\n")
    return Run(point, {"model.init_args.lr": point}, seed, f"runs/{point}/seed{seed}", "done",
               metrics={"test/acc": test}, validation={"val/loss": val_loss}, config=f"seed_everything: {seed}\n")


def test_a_diverged_point_is_never_selected_and_the_record_says_so():
    """lr=1e-2 diverged on seed 0 (val/loss NaN) and looks best on seed 1: min() kept the NaN that came first."""
    nan = float("nan")
    runs = [_val("1e-2", 0, nan, 0.1), _val("1e-2", 1, 0.2, 0.9), _val("1e-4", 0, 0.3, 0.7), _val("1e-4", 1, 0.3, 0.8)]
    by_mean = summarise(runs, "x", select="val/loss")["selected"]
    assert by_mean["selected"]["point"] == "1e-4" and by_mean["metrics"]["test/acc"]["values"] == {"0": 0.7, "1": 0.8}
    assert by_mean["selected"]["left_out"] == {"1e-2": "val/loss mean nan"}
    assert math.isnan(summarise(runs, "x")["points"][0]["validation"]["val/loss"]["std"])  # no crash in stdev
    by_seed = summarise(runs, "x", select="val/loss", select_by="seed")["selected"]
    assert by_seed["selected"]["points"] == {"0": "1e-4", "1": "1e-2"}
    assert by_seed["selected"]["incomplete"] == {"0": "chose among 1 of 2 points; 1e-2: val/loss nan"}
    everything_diverged = [_val("1e-2", 0, nan), _val("1e-4", 0, float("inf"))]
    summary = summarise(everything_diverged, "x", select="val/loss")
    assert "selected" not in summary and summary["not_selected"] == (
        "no grid point has a finite val/loss: 1e-2: val/loss mean nan; 1e-4: val/loss mean inf")
    assert "No grid point selected: no grid point has a finite val/loss" in summary_markdown(summary)


def test_failed_seeds_stay_failed_in_the_selection_and_fewer_seeds_do_not_win():
    """Point a: seed 0 is best of all, seeds 1 and 2 failed. By mean it must not win on its one seed; by seed, a
    seed that failed at every point is failed in the selection (the table's "k of n seeds failed" note)."""
    runs = [_val("a", 0, 0.1), _val("a", 1, None), _val("a", 2, None),
            _val("b", 0, 0.3), _val("b", 1, 0.3), _val("b", 2, 0.4)]
    chosen = summarise(runs, "x", select="val/loss")["selected"]
    assert chosen["selected"]["point"] == "b" and chosen["selected"]["n"] == {"a": 1, "b": 3}
    assert chosen["selected"]["left_out"] == {"a": "n=1 of the 3 finished seeds the others have"}
    summary = json.loads(json.dumps(summarise(runs, "x", select="val/loss")))
    assert ("Selected on validation (val/loss, min, by mean): b (n per point: a 1, b 3); test metrics chose nothing."
            in summary_markdown(summary))
    assert "Not eligible: a: n=1 of the 3 finished seeds the others have." in summary_markdown(summary)
    runs = [_val("a", 0, 0.1), _val("a", 1, None), _val("b", 0, 0.3), _val("b", 1, None), _val("b", 2, 0.2),
            _val("a", 2, 0.5)]
    by_seed = summarise(runs, "x", select="val/loss", select_by="seed")["selected"]
    assert by_seed["seeds"] == [0, 1, 2] and by_seed["metrics"]["test/acc"]["n"] == 2
    assert by_seed["failed"] == {1: "a: failed (fit exit 1: boom); b: failed (fit exit 1: boom)"}
    assert by_seed["unfinished"] == {}
    assert by_seed["selected"]["points"] == {"0": "a", "2": "b"}


def test_vary_data_fixes_the_model_seed_and_the_summary_says_so(tmp_path):
    runs = plan(tmp_path, [], [3])
    args = Sweep(["a.yaml"], [], runs, vary="data", model_seed=7).arguments(runs[0], "fit")
    assert "--data.init_args.seed=3" in args and "--seed_everything=7" in args
    args = Sweep(["a.yaml"], [], runs, vary="both").arguments(runs[0], "fit")
    assert "--data.init_args.seed=3" in args and "--seed_everything=3" in args
    record = compare.randomness({"runs": [{"seed": s, "config": f"seed_everything: 7\ndata: {{init_args: {{seed: {s}}}}}"}
                                          for s in (0, 1)]})
    assert record == {"model": 7, "data": "seed"}
    assert compare.describe_randomness(record) == ("the seed sets the data order, hold-out and draws "
                                                   "(data.init_args.seed); model seed fixed at 7")


def test_a_sweep_records_paths_relative_to_the_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert project_path(str(tmp_path / "runs" / "x")) == "runs/x"
    assert project_path(f"--out={tmp_path}/runs/x") == "--out=runs/x"
    assert project_path("--trainer.max_epochs=1") == "--trainer.max_epochs=1"
    assert project_path(str(tmp_path.parent / "elsewhere.yaml")) == "../elsewhere.yaml"


def test_sweeps_of_different_test_data_are_flagged_and_a_missing_metric_says_where(tmp_path, capsys):
    sst2 = ROOT / "experiments" / "results" / "minilm_budget_full"
    digits = ROOT / "experiments" / "results" / "digits_cnn"
    compare.main([str(sst2), str(ROOT / "experiments" / "results" / "minilm_budget_lora_qv")])
    assert "note" not in capsys.readouterr().out  # the same data and budget, another method: nothing to note
    compare.main([str(sst2), str(digits), "--metric", "test/acc"])
    note = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("note"))
    assert note.startswith("note (digits_cnn vs minilm_budget_full): the sweeps differ in trainer.max_epochs (30 vs 1), ")
    assert ("data.class_path (bigmodel.data.ImageDataModule vs bigmodel.data.TextClassificationDataModule)" in note
            and "data.init_args.test_files (null vs ../shared/data/sst2/test.tsv)" in note)
    with pytest.raises(ValueError, match=r"test/accc: measured in neither sweep; both have test/acc, "):
        compare.main([str(sst2), str(digits), "--metric", "test/accc"])


def test_sweeps_tested_on_different_data_get_numbers_but_no_verdict(capsys):
    """Digits against SST-2: the interval is shown, the verdict (and its Holm counterpart, the seeds it needs) says
    they are not comparable, naming the data settings; the other row keeps its verdict and is Holm's whole family;
    the results table's cell says the same."""
    full, lora, digits = (str(ROOT / "experiments" / "results" / name)
                          for name in ("minilm_budget_full", "minilm_budget_lora_qv", "digits_cnn"))
    compare.main([full, digits, lora, "--metric", "test/acc"])
    out = capsys.readouterr().out
    rows = {line.split(" | ")[0]: line.strip("| ").split(" | ") for line in out.splitlines() if " − " in line}
    apart = ("not comparable: tested on different data (data.class_path, data.init_args.dataset, "
             "data.init_args.test_files; values in the note)")
    assert rows["| digits_cnn − minilm_budget_full"][6:] == [apart, "–", apart]
    assert rows["| digits_cnn − minilm_budget_full"][2] == "+0.1228 [+0.0879, +0.1576]"
    assert rows["| minilm_budget_lora_qv − minilm_budget_full"][6:] == ["minilm_budget_full better", "2",
                                                                       "minilm_budget_full better"]
    assert "(Holm, familywise 5 % over the 1 comparison with a verdict)" in out
    cell = compare.delta(compare.point_of(compare.load(digits)), compare.load(digits), compare.load(full), "test/acc",
                         "SST-2")
    assert cell.startswith("+0.1228 [+0.0879, +0.1576] vs SST-2 (paired, n=3): " + apart + "; the sweeps differ in ")
    assert "better" not in cell


def test_a_sweep_with_no_finished_run_says_so_and_how_to_resume_it(tmp_path):
    """Every run of one sweep interrupted: it read 'test/acc: measured in only the reference; both have no metric in
    common'."""
    reference, stopped = _summary(tmp_path / "a", REFERENCE), _summary(tmp_path / "e", {"0": 0.5, "1": 0.5, "2": 0.5})
    record = json.loads(Path(stopped, "summary.json").read_text())
    record["command"] = "bigmodel sweep -c x.yaml --seeds 0 1 2 --out runs/e"
    record["points"][0].update(metrics={}, unfinished={"0": "fit exit 143", "1": "fit exit 143"}, failed={"2": "boom"})
    Path(stopped, "summary.json").write_text(json.dumps(record))
    expected = (f"{stopped}: no finished run (seeds 0, 1 interrupted or not started; seed 2 failed); rerun its sweep "
                "command to resume it: `bigmodel sweep -c x.yaml --seeds 0 1 2 --out runs/e`")
    with pytest.raises(ValueError) as refused:
        compare.table([reference, stopped])
    assert str(refused.value) == expected
    with pytest.raises(ValueError, match="^the stopped one: no finished run "):  # a results table's reference too
        compare.delta(compare.load(reference)["points"][0], compare.load(reference), record, "test/acc", "the stopped one")


def test_an_extra_seed_on_one_side_still_pairs_on_the_seeds_both_have(tmp_path, capsys):
    """One sweep with a fourth seed: paired over the three shared ones (not Welch over all), n says so and the
    seed left out is named; Welch only when fewer than 2 seeds are shared, its n per sweep."""
    reference = _summary(tmp_path / "a", {s: REFERENCE[s] for s in ("0", "1", "2")})
    other = _summary(tmp_path / "b", OTHER)  # seeds 0-3
    shared = ("0", "1", "2")
    expected = stats.ttest_rel([OTHER[s] for s in shared], [REFERENCE[s] for s in shared]).confidence_interval()
    compare.main([reference, other, "--metric", "test/acc"])
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| b − a"))
    cells = row.strip("| ").split(" | ")
    assert cells[2].endswith(f"[{compare.number(expected.low)}, {compare.number(expected.high)}]")
    assert cells[4:6] == ["3 (of 4 vs 3)", "paired on the seeds both have (left out: seed 3 of b)"]
    assert cells[6] == "not resolved at 3 seeds"
    cell = compare.delta(compare.load(other)["points"][0], compare.load(other), compare.load(reference), "test/acc", "A")
    assert "vs A (paired, n=3 (of 4 vs 3)): " in cell

    apart = _summary(tmp_path / "c", {"2": 0.70, "5": 0.76, "6": 0.73, "7": 0.72})  # one seed in common
    compare.main([reference, apart, "--metric", "test/acc"])
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| c − a"))
    assert row.strip("| ").split(" | ")[4:6] == ["4 vs 3", "unpaired (different seeds): Welch"]


LORA = "model: {init_args: {finetune: lora, lr: 0.001, lora: {rank: 8}}}\n"
BOOKKEEPING = ("trainer: {logger: {init_args: {save_dir: runs/sweeps/b, version: fit}}, enable_progress_bar: false, "
               "log_every_n_steps: 5, val_check_interval: null, fast_dev_run: false, precision: 32%s}\n")


def test_sweeps_of_other_budgets_or_tested_checkpoints_get_a_note_and_other_methods_do_not(tmp_path, capsys):
    """The probe's case: a LoRA sweep cut to 10 steps (never validated: each seed tested on last.ckpt) against full
    fine-tuning. The note names the budget and the checkpoint, never the method (finetune, lr, ranks), the seeds or a
    run's bookkeeping; null, false and Lightning's default are one setting; a summary without configs gets no note."""
    full = _summary(tmp_path / "full", REFERENCE, config="trainer: {max_epochs: 1, val_check_interval: 1.0, "
                    "precision: 32-true}\nmodel: {init_args: {finetune: full, lr: 0.0001}}\n", ckpt="best")
    cut = _summary(tmp_path / "lora", OTHER, config="trainer: {max_epochs: 1, max_steps: 10, limit_val_batches: 2, "
                   "precision: 32-true}\n" + LORA, ckpt="last")
    compare.main([full, cut])
    lines = capsys.readouterr().out.splitlines()
    assert lines[4] == ("note (lora vs full): the sweeps differ in trainer.max_steps (10 vs null), "
                        "trainer.limit_val_batches (2 vs null), tested checkpoint (last vs best): the difference may "
                        "come from these, not from the method")
    assert lines[2].startswith("| lora − full |") and lines[3] == lines[5] == ""  # right under the table

    same = _summary(tmp_path / "same", OTHER, config=BOOKKEEPING % ", max_epochs: 1" + LORA, ckpt="best")
    old = tmp_path / "old"
    _summary(old, OTHER)
    record = json.loads((old / "summary.json").read_text())
    for run in record["runs"]:
        del run["config"], run["ckpt_path"]
    (old / "summary.json").write_text(json.dumps(record))
    compare.main([full, same, str(old), "--metric", "test/acc"])
    assert "note" not in capsys.readouterr().out

    cell = compare.delta(compare.load(cut)["points"][0], compare.load(cut), compare.load(full), "test/acc", "full")
    assert cell.endswith(": this row better; the sweeps differ in trainer.max_steps (10 vs null), "
                         "trainer.limit_val_batches (2 vs null), tested checkpoint (last vs best): the difference may "
                         "come from these, not from the method")


def test_a_summary_says_which_seeds_were_tested_on_last_ckpt_for_want_of_a_best_one():
    runs = [Run("default", {}, s, f"runs/x/default/seed{s}", "done", metrics={"test/acc": 0.5},
                ckpt_path=f"runs/x/default/seed{s}/checkpoints/{kind}.ckpt", config="seed_everything: 0\n")
            for s, kind in ((0, "best"), (1, "last"), (2, "last"))]
    summary = json.loads(json.dumps(summarise(runs, "bigmodel sweep")))
    assert summary["test_ckpt"] == "best"
    assert ("Tested on last.ckpt, not best.ckpt (none was saved, as when a fit ends before its first validation): "
            "seed 1, seed 2.") in summary_markdown(summary)
    assert held_settings.describe_checkpoints(held_settings.tested_checkpoints(summary)) == "best (seed 0), last (seeds 1, 2)"
    assert "Tested on" not in summary_markdown(summarise(runs, "bigmodel sweep", test_ckpt="last"))  # as asked


def test_a_summary_made_before_test_ckpt_was_recorded_reads_it_off_its_command():
    """Summaries made before ``test_ckpt`` was recorded (every committed one): a sweep run with ``--test_ckpt last``
    gets no "Tested on last.ckpt" line for its seeds; one run without it asked for best; no command says nothing."""
    runs = [Run("default", {}, s, f"runs/x/default/seed{s}", "done", metrics={"test/acc": 0.5},
                ckpt_path=f"runs/x/default/seed{s}/checkpoints/last.ckpt", config="seed_everything: 0\n")
            for s in (0, 1)]
    summary = json.loads(json.dumps(summarise(runs, "bigmodel sweep -c a.yaml --test_ckpt last --seeds 0 1")))
    del summary["test_ckpt"]
    assert summary_notes.asked_ckpt(summary) == "last" and "Tested on" not in summary_markdown(summary)
    summary["command"] = "bigmodel sweep -c a.yaml --test_ckpt=last --seeds 0 1"
    assert summary_notes.asked_ckpt(summary) == "last" and "Tested on" not in summary_markdown(summary)
    summary["command"] = "bigmodel sweep -c a.yaml --seeds 0 1"  # the option's default
    assert "Tested on last.ckpt, not best.ckpt" in summary_markdown(summary)
    del summary["command"]
    assert summary_notes.asked_ckpt(summary) is None and "Tested on" not in "".join(summary_notes.describe_summary(summary))


def test_a_count_of_batches_is_not_a_fraction_and_lightnings_default_clip_is_norm():
    """Lightning reads an int ``limit_*_batches``/``val_check_interval`` as batches, a float as a fraction: ``1`` (one
    batch, every batch) differs from ``1.0`` and from null; ``0`` and ``0.0`` are both none. A null clip algorithm is
    Lightning's norm."""
    differ = held_settings.setting_differences
    one = {"trainer.limit_val_batches": 1, "trainer.val_check_interval": 1, "trainer.overfit_batches": 2}
    assert differ(one, {"trainer.limit_val_batches": 1.0, "trainer.val_check_interval": None}) == [
        "trainer.limit_val_batches (1 vs 1.0)", "trainer.val_check_interval (1 vs null)",
        "trainer.overfit_batches (2 vs null)"]
    assert differ({"trainer.limit_val_batches": 1.0, "trainer.limit_test_batches": 0, "trainer.overfit_batches": 0},
                  {"trainer.limit_test_batches": 0.0, "trainer.overfit_batches": 0.0}) == []
    assert differ({"trainer.limit_train_batches": 50}, {"trainer.limit_train_batches": 50}) == []
    assert differ({"trainer.gradient_clip_algorithm": None}, {"trainer.gradient_clip_algorithm": "norm"}) == []
    clip = {"trainer.gradient_clip_algorithm": "value"}
    assert differ(clip, {}) == ["trainer.gradient_clip_algorithm (value vs null)"]
