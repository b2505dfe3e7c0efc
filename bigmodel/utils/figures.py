"""Figures of what a model learned: attention per head, attention rollout over tokens or image patches, and
confusion matrices. One drawing of each for TensorBoard (``bigmodel.tensorboard``) and the notebooks.

Plain matplotlib ``Figure`` objects (no pyplot, so no global backend or open-figure state): TensorBoard's
``add_figure`` renders them, a notebook shows them with ``display(fig)`` (after ``%matplotlib inline``). Inputs are CPU tensors of one example.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties

CMAP = "viridis"

# Fonts with Chinese, Japanese and Korean glyphs, any of which the figures' text falls back to when installed
# (matplotlib >= 3.6 takes each glyph from the first family in the list that has it): matplotlib's own DejaVu Sans
# has none, and the digits image-text captions are partly Chinese.
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans CJK TC", "Noto Sans CJK KR", "Noto Sans SC",
             "Source Han Sans SC", "Source Han Sans CN", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei",
             "Droid Sans Fallback", "AR PL UMing CN", "Microsoft YaHei", "SimHei", "PingFang SC", "Hiragino Sans GB",
             "Heiti SC", "Arial Unicode MS")
CJK_FONT_PACKAGE = "fonts-noto-cjk (apt; conda-forge: font-ttf-noto-cjk)"


def text_font(size: float) -> FontProperties:
    """The user's font family (``rcParams``, read, not changed) with every installed CJK font behind it, for text
    that may hold any script: set per text, so the user's own plots are untouched."""
    from matplotlib import font_manager, rcParams

    installed = {f.name for f in font_manager.fontManager.ttflist}
    return FontProperties(family=[*rcParams["font.family"], *(f for f in CJK_FONTS if f in installed)], size=size)


def missing_glyphs(texts: Iterable[str], font: FontProperties) -> list[str]:
    """The characters of ``texts`` that no family of ``font`` has (matplotlib draws each as a box), in order."""
    from matplotlib import font_manager

    charmaps = []
    for family in font.get_family():
        try:
            path = font_manager.fontManager.findfont(FontProperties(family=[family]), fallback_to_default=False)
        except ValueError:  # not installed
            continue
        charmaps.append(font_manager.get_font(path).get_charmap())
    chars = dict.fromkeys(c for text in texts for c in text if not c.isspace() and c.isprintable())
    return [c for c in chars if not any(ord(c) in charmap for charmap in charmaps)]


def _grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def attention_heads(weights: torch.Tensor, tokens: Sequence[str], title: str = "",
                    heads: Sequence[int] | None = None, max_tokens: int | None = None) -> Figure:
    """One layer's attention of one sentence, a heatmap per head: rows attend (queries) to columns (keys), each head
    on its own colour scale (early heads are near uniform). ``max_tokens`` draws only the first tokens of a long
    sentence (labels stay readable) and says so in the title."""
    heads = list(range(weights.shape[0])) if heads is None else list(heads)
    total = len(tokens)
    if max_tokens is not None and total > max_tokens:
        weights, tokens = weights[:, :max_tokens, :max_tokens], tokens[:max_tokens]
        title = f"{title + ': ' if title else ''}first {max_tokens} of {total} tokens"
    rows, cols = _grid(len(heads))
    size = max(2.5, 0.16 * len(tokens) + 1.0)
    fig = Figure(figsize=(cols * (size + 0.6), rows * size), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(heads):]:
        ax.set_axis_off()
    for ax, h in zip(axes.flat, heads):
        w = weights[h].float()
        image = ax.imshow(w.numpy(), cmap=CMAP, vmin=0.0)
        ax.set_title(f"head {h} (max {float(w.max()):.2f})", fontsize=9)
        ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=7)
        ax.set_yticks(range(len(tokens)), tokens, fontsize=7)
        fig.colorbar(image, ax=ax, shrink=0.8).ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def token_rollout(scores: torch.Tensor, tokens: Sequence[str], title: str = "attention rollout from [CLS]",
                  max_tokens: int | None = None) -> Figure:
    """How much [CLS] draws from each token through all layers (Abnar & Zuidema, 2020), as a strip over the text.
    The residual keeps most of it on [CLS] itself, which would leave every other token black: the strip shows the
    other tokens' shares of the rest (summing to 1 over the whole sentence), and the title what [CLS] keeps.
    ``max_tokens`` draws only the first tokens and says so."""
    scores = scores.float()
    rest = scores[1:] / scores[1:].sum().clamp_min(1e-12)
    title = f"{title}: {tokens[0]} keeps {float(scores[0]):.0%}, the rest shared as shown"
    if max_tokens is not None and len(tokens) > max_tokens:
        title += f" (first {max_tokens} of {len(tokens)} tokens)"
        rest, tokens = rest[: max_tokens - 1], tokens[:max_tokens]
    fig = Figure(figsize=(max(4.0, 0.35 * len(tokens) + 1.6), 1.8), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(rest[None].numpy(), cmap=CMAP, aspect="auto", vmin=0.0)
    ax.set_xticks(range(len(tokens) - 1), tokens[1:], rotation=90, fontsize=8)
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, pad=0.01, label="share").ax.tick_params(labelsize=7)
    return fig


def image_attention(image: torch.Tensor, maps: torch.Tensor, titles: Sequence[str], title: str = "") -> Figure:
    """The picture, then each (grid_h, grid_w) map stretched over it: where [CLS] looks, per head and rolled out;
    each map on its own colour scale, with its colour bar (a share of [CLS]'s attention)."""
    picture = image.float()
    picture = (picture - picture.min()) / (picture.max() - picture.min()).clamp_min(1e-8)
    picture = picture.permute(1, 2, 0).numpy()
    gray = picture.shape[-1] == 1
    extent = (0, picture.shape[1], picture.shape[0], 0)
    rows, cols = _grid(len(maps) + 1, max_cols=5)
    fig = Figure(figsize=(2.6 * cols, 2.3 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    axes.flat[0].imshow(picture[..., 0] if gray else picture, cmap="gray" if gray else None, extent=extent)
    axes.flat[0].set_title("input", fontsize=9)
    for ax, m, name in zip(axes.flat[1:], maps, titles):
        ax.imshow(picture[..., 0] if gray else picture, cmap="gray" if gray else None, extent=extent)
        overlay = ax.imshow(m.float().numpy(), cmap="inferno", alpha=0.6, extent=extent, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        fig.colorbar(overlay, ax=ax, shrink=0.8, pad=0.02).ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def confusion_matrix(matrix: torch.Tensor, class_names: Sequence[str], title: str = "") -> Figure:
    """Counts and row-normalised rates (recall on the diagonal) side by side; numbers written in when they fit."""
    counts = matrix.to(torch.float64)
    rates = counts / counts.sum(dim=1, keepdim=True).clamp_min(1)
    n = len(class_names)
    side = min(14.0, max(3.5, 0.45 * n + 2.0))
    fig = Figure(figsize=(2 * side, side), layout="constrained")
    for ax, values, name, fmt in zip(fig.subplots(1, 2), (counts, rates), ("counts", "row-normalised"),
                                     ("{:.0f}", "{:.2f}")):
        image = ax.imshow(values.numpy(), cmap="Blues", vmin=0)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        labels = [c[:14] for c in class_names]
        ax.set_xticks(range(n), labels, rotation=90, fontsize=8)
        ax.set_yticks(range(n), labels, fontsize=8)
        if n <= 20:
            top = float(values.max()) or 1.0
            for i in range(n):
                for j in range(n):
                    v = float(values[i, j])
                    ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7,
                            color="white" if v > 0.6 * top else "black")
        fig.colorbar(image, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig



def mask_predictions(words: Sequence[Sequence[str]], probs: torch.Tensor, titles: Sequence[str],
                     title: str = "") -> Figure:
    """The MLM head's top-k words at each [MASK] of a sentence, a bar chart per mask (best on top): what the
    pretraining objective itself learned, which the attention maps alone do not show. ``probs`` is (masks, k)."""
    rows, cols = _grid(len(words))
    fig = Figure(figsize=(2.8 * cols, 0.3 * probs.shape[-1] * rows + 1.0 * rows + 0.3), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(words):]:
        ax.set_axis_off()
    right = min(1.0, 1.3 * float(probs.max()))  # one scale for all masks; a weak model's bars stay visible
    for ax, candidates, p, name in zip(axes.flat, words, probs.float(), titles):
        bars = ax.barh(range(len(candidates)), p.numpy(), color="tab:blue")
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
        ax.set_yticks(range(len(candidates)), candidates, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, right)
        ax.set_xlabel("probability", fontsize=8)
        ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def retrieval_example(image: torch.Tensor, captions: Sequence[str], scores: torch.Tensor, relevant: Sequence[bool],
                      title: str = "") -> Figure:
    """An image beside the captions ranked highest for it (best on top) with their cosine similarity; the captions
    that describe it are green and ticked, so a glance tells a right retrieval from a wrong one. Captions and title
    fall back to an installed CJK font (``text_font``); without one, ``missing_glyphs`` says what draws as boxes."""
    picture = image.float()
    picture = ((picture - picture.min()) / (picture.max() - picture.min()).clamp_min(1e-8)).permute(1, 2, 0).numpy()
    fig = Figure(figsize=(8.0, 0.35 * len(captions) + 1.4), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1, 3])
    left.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray")
    left.set_axis_off()
    colors = ["tab:green" if r else "tab:gray" for r in relevant]
    bars = right.barh(range(len(captions)), scores.float().numpy(), color=colors)
    right.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
    right.set_yticks(range(len(captions)), [("✓ " if r else "") + c[:60] for c, r in zip(captions, relevant)],
                     fontproperties=text_font(8))  # captions in any script, where a font for it is installed
    right.invert_yaxis()
    right.set_xlim(min(0.0, float(scores.min())), 1.1)
    right.set_xlabel("cosine similarity", fontsize=8)
    if title:
        fig.suptitle(title, fontproperties=text_font(10))  # class names in any script
    return fig


def results_chart(measured: Sequence[tuple[dict, dict]]) -> Figure:
    """The results table as bars, one panel per data set (rows of the same data are comparable): the mean over seeds,
    whiskers of one standard deviation (clipped to what a percentage can be), the single seeds as dots, and a dashed
    chance line for rows that declare ``chance``. ``measured`` pairs each row of ``experiments/results.yaml`` (its
    ``label`` names the bar) with its statistics from ``bigmodel.commands.results.row_stats``."""
    from bigmodel.utils.formatting import mean_std

    groups: dict[str, list[tuple[dict, dict]]] = {}
    for row, stats in measured:
        if not row.get("label"):
            raise ValueError(f"results row {row['result']!r} has no label: give it 'label:', a short name for its bar")
        groups.setdefault(row.get("data", ""), []).append((row, stats))
    fig = Figure(figsize=(10, 1.0 + sum(0.45 * len(g) + 0.7 for g in groups.values())), layout="constrained")
    axes = fig.subplots(len(groups), 1, squeeze=False, gridspec_kw={"height_ratios": [len(g) for g in groups.values()]})
    chance_drawn = False
    for ax, (data, group) in zip(axes.flat, groups.items()):
        for y, (row, stats) in enumerate(group):
            percent = bool(row.get("percent"))
            scale = 100.0 if percent else 1.0
            mean, std = stats["mean"] * scale, (stats["std"] or 0.0) * scale
            low, high = (min(std, mean), min(std, 100.0 - mean)) if percent else (std, std)
            ax.barh(y, mean, xerr=[[low], [high]], color="tab:blue", alpha=0.6, capsize=3)
            ax.plot([v * scale for v in stats["values"].values()], [y] * len(stats["values"]), "k.")
            ax.text(mean, y - 0.38, " " + mean_std(stats, scale, 1 if percent else None), fontsize=8, va="center")
            if row.get("chance") is not None:
                ax.vlines(row["chance"] * scale, y - 0.45, y + 0.45, colors="tab:red", linestyles="--", gid="chance",
                          label="chance" if not chance_drawn else None)
                chance_drawn = True
        ax.set_yticks(range(len(group)), [row["label"] for row, _ in group], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 100 if all(row.get("percent") for row, _ in group) else None)
        metrics = {row["metric"] + (" (%)" if row.get("percent") else "") for row, _ in group}
        ax.set_xlabel(", ".join(sorted(metrics)))
        ax.set_title(data, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    if chance_drawn:
        fig.legend(loc="outside upper right", fontsize=8)
    return fig
