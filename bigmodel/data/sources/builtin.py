"""Offline datasets made from text that every CPython installation ships (``pydoc_data``).

``pydoc``: the Python reference topics (about 51k words of English prose after de-duplication) as a pretraining corpus, one paragraph
per line. ``pydoc-topics``: a real labelled task from the same pages -- which reference page does a paragraph come
from (8 pages, paragraphs that occur on several pages dropped) -- split 80/10/10 by a stable hash.
"""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

TOPIC_CLASSES = [
    "compound",
    "debugger",
    "formatstrings",
    "specialnames",
    "string-methods",
    "types",
    "typesmapping",
    "typesseq",
]


def _paragraphs(text: str, min_words: int = 6) -> list[str]:
    paras = (" ".join(p.split()) for p in re.split(r"\n\s*\n", text))
    return [p for p in paras if len(p.split()) >= min_words and not set(p) <= set("*=-~ ")]


def _split_of(text: str) -> str:
    bucket = int(hashlib.sha256(text.encode()).hexdigest(), 16) % 10
    return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


def materialise(name: str, root: Path) -> dict[str, list[str]]:
    """Write the built-in dataset's files under ``root`` (once) and return {split: [files]}."""
    from pydoc_data.topics import topics

    root.mkdir(parents=True, exist_ok=True)
    if name == "pydoc":
        path = root / "pydoc_topics.txt"
        if not path.exists():
            lines = [p for key in sorted(topics) for p in _paragraphs(topics[key])]
            _atomic_write(path, "\n".join(dict.fromkeys(lines)) + "\n")
        return {"train": [str(path)]}
    if name == "pydoc-topics":
        paths = {split: root / f"pydoc_topics_{split}.csv" for split in ("train", "validation", "test")}
        if not all(p.exists() for p in paths.values()):
            owner: dict[str, set[str]] = {}
            for label in TOPIC_CLASSES:
                for p in _paragraphs(topics[label]):
                    owner.setdefault(p, set()).add(label)
            rows = {split: [] for split in paths}
            for text, labels in owner.items():
                if len(labels) == 1:
                    rows[_split_of(text)].append((text, labels.pop()))
            for split, path in paths.items():
                _atomic_write(path, _csv(sorted(rows[split])))
        return {split: [str(p)] for split, p in paths.items()}
    raise ValueError(f"unknown built-in dataset {name!r}; choose builtin:pydoc or builtin:pydoc-topics")


def _csv(rows: list[tuple[str, str]]) -> str:
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    return buf.getvalue()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
