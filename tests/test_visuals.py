"""The figures of bigmodel.utils.figures, read back from their matplotlib objects: what a reader of the picture sees."""

from pathlib import Path

import pytest
import torch

from bigmodel.utils import figures as visuals

ROOT = Path(__file__).resolve().parents[1]


def _colorbars(fig) -> list:
    return [im.colorbar for ax in fig.axes for im in ax.images if im.colorbar is not None]


def _attention(heads: int, n: int) -> torch.Tensor:
    return torch.rand(heads, n, n, generator=torch.Generator().manual_seed(0)).softmax(-1)


def test_attention_heads_have_colour_bars_and_say_when_a_sentence_is_cut():
    tokens = [f"t{i}" for i in range(128)]
    fig = visuals.attention_heads(_attention(2, 128), tokens, "layer 1", max_tokens=40)
    assert fig.get_suptitle() == "layer 1: first 40 of 128 tokens"
    heads = [ax for ax in fig.axes if ax.images and ax.get_title().startswith("head")]
    assert len(heads) == 2 and len(_colorbars(fig)) == 2
    assert [t.get_text() for t in heads[0].get_xticklabels()] == tokens[:40]
    assert heads[0].images[0].get_array().shape == (40, 40)
    short = visuals.attention_heads(_attention(2, 10), tokens[:10], "layer 0", max_tokens=40)
    assert short.get_suptitle() == "layer 0"  # nothing cut, nothing said


def test_token_rollout_shows_the_other_tokens_shares_and_what_cls_keeps():
    tokens = ["[CLS]", "the", "cat", "sat", "[SEP]"]
    scores = torch.tensor([0.8, 0.02, 0.1, 0.05, 0.03])
    fig = visuals.token_rollout(scores, tokens)
    (ax,) = [ax for ax in fig.axes if ax.get_xticklabels()]
    assert [t.get_text() for t in ax.get_xticklabels()] == tokens[1:]
    strip = torch.as_tensor(ax.images[0].get_array())
    torch.testing.assert_close(strip[0], torch.tensor([0.1, 0.5, 0.25, 0.15]), check_dtype=False)
    assert "[CLS] keeps 80%" in ax.get_title() and len(_colorbars(fig)) == 1
    cut = visuals.token_rollout(scores, tokens, max_tokens=3)
    (ax,) = [ax for ax in cut.axes if ax.get_xticklabels()]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["the", "cat"] and "first 3 of 5 tokens" in ax.get_title()
    torch.testing.assert_close(torch.as_tensor(ax.images[0].get_array())[0], torch.tensor([0.1, 0.5]),
                               check_dtype=False)  # shares of the whole sentence, not renormalised over the cut


def test_image_attention_puts_a_colour_bar_beside_every_map():
    maps = torch.rand(3, 4, 4)
    fig = visuals.image_attention(torch.rand(1, 8, 8), maps, ["head 0", "head 1", "rollout"], "label 3, predicted 5")
    assert len(_colorbars(fig)) == 3 and fig.get_suptitle() == "label 3, predicted 5"


def test_retrieval_example_ranks_captions_and_ticks_the_right_ones():
    fig = visuals.retrieval_example(torch.rand(1, 8, 8), ["a 3", "a 5", "an 8"], torch.tensor([0.9, 0.4, 0.1]),
                                    [True, False, False], "validation image 0")
    bars = next(ax for ax in fig.axes if ax.patches)
    assert [t.get_text() for t in bars.get_yticklabels()] == ["✓ a 3", "a 5", "an 8"]
    assert [p.get_width() for p in bars.patches] == pytest.approx([0.9, 0.4, 0.1])
    assert fig.get_suptitle() == "validation image 0"


def test_retrieval_captions_fall_back_per_glyph_to_an_installed_font_without_touching_rcparams(monkeypatch):
    """DejaVu Sans has no CJK glyphs: captions take the ones it lacks from an installed CJK font. No CJK font is
    installed here, so STIXGeneral (bundled with matplotlib) stands in for one: it has U+2315, DejaVu Sans has not."""
    import warnings

    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    caption, rc = "a 3 \u2315", dict(matplotlib.rcParams)

    def glyph_warnings(fonts: tuple[str, ...]) -> list[str]:
        monkeypatch.setattr(visuals, "CJK_FONTS", fonts)
        fig = visuals.retrieval_example(torch.rand(1, 8, 8), [caption], torch.tensor([0.9]), [True], "label \u2315")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            FigureCanvasAgg(fig).draw()
        return [str(w.message) for w in caught if "missing from font" in str(w.message)]

    assert glyph_warnings(()) and visuals.missing_glyphs([caption], visuals.text_font(8)) == ["\u2315"]
    assert glyph_warnings(("No Such Font", "STIXGeneral")) == []  # drawn from the fallback, no box
    assert visuals.text_font(8).get_family()[-1] == "STIXGeneral"
    assert visuals.missing_glyphs([caption, "图 3"], visuals.text_font(8)) == ["图"]
    assert dict(matplotlib.rcParams) == rc  # the user's own plots keep their fonts


def _committed_results() -> list[tuple[dict, dict]]:
    import yaml

    from bigmodel.commands.results import row_stats

    spec = ROOT / "experiments" / "results.yaml"
    rows = yaml.safe_load(spec.read_text(encoding="utf-8"))["rows"]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)  # the spec's summary paths are relative to the project root
        return [(row, row_stats(row, spec)[2]) for row in rows if "summary" in row]


def test_results_chart_names_each_bar_clips_whiskers_and_draws_chance():
    measured = _committed_results()
    fig = visuals.results_chart(measured)
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    for data, ax in panels.items():
        rows = [row for row, _ in measured if row.get("data", "") == data]
        names = [t.get_text() for t in ax.get_yticklabels()]
        assert names == [row["label"] for row in rows] and len(set(names)) == len(names), data  # one name per bar
        for (row, stats), caps in zip([m for m in measured if m[0].get("data", "") == data],
                                      [c for c in ax.containers if hasattr(c, "lines")]):
            ends = [x for line in caps.lines[2] for x in line.get_segments()[0][:, 0]]
            assert 0 <= min(ends) and max(ends) <= 100, (row["label"], ends)  # a percentage's whisker stays in 0-100
        chance = [c for c in ax.collections if c.get_gid() == "chance"]
        assert sorted({float(s[0][0]) for c in chance for s in c.get_segments()}) == sorted(
            {100 * row["chance"] for row in rows}), data
    image_text = panels["scikit-learn digits test split, 360 images x 120 distinct captions (class-level relevance)"]
    assert len({t.get_text() for t in image_text.get_yticklabels()}) == 3  # the three image-text bars, told apart
    with pytest.raises(ValueError, match="has no label: give it 'label:', a short name for its bar"):
        visuals.results_chart([({**measured[0][0], "label": None}, measured[0][1])])
