"""The README's layout map is the tree, and every relative link in the documentation leads somewhere: a renamed
module, folder or heading fails here instead of leaving the front page pointing at nothing."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILE = re.compile(r"(?<![\w./<>-])([\w-]+\.(?:py|md|yaml|ipynb|txt|cfg))\b")  # config.py, not bigmodel.monitoring
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def layout_map(readme: str) -> str:
    """The fenced block under the README's "## Layout" heading."""
    section = readme.split("\n## Layout\n", 1)[1]
    return section.split("```", 2)[1].split("\n", 1)[1]


def parse_layout(block: str) -> tuple[set[str], set[str]]:
    """(directories, files) the map names, relative to the root. An entry line starts at two spaces per level with a
    name (``nn/``, ``README.md``); a directory's description and its deeper-indented continuation lines name files
    inside it; a line indented further than one level below the last entry continues that entry."""
    dirs, files, stack = set(), set(), []  # stack: the directory path of each open level
    for line in block.splitlines():
        if not line.strip():
            continue
        indent, first = len(line) - len(line.lstrip()), line.split()[0]
        is_entry = indent % 2 == 0 and indent // 2 <= len(stack) and (first.endswith("/") or FILE.fullmatch(first))
        rest = line
        if is_entry:
            stack, rest = stack[: indent // 2], line.split(None, 1)[1] if len(line.split(None, 1)) > 1 else ""
            if first.endswith("/"):
                stack.append(first.rstrip("/"))
                dirs.add("/".join(stack))
            else:
                files.add("/".join(stack + [first]))
        files |= {"/".join(stack + [name]) for name in FILE.findall(rest)}
    return dirs, files


README = (ROOT / "README.md").read_text(encoding="utf-8")
DIRS, FILES = parse_layout(layout_map(README))
DOCS = sorted(p for p in ROOT.rglob("README.md")  # not in .git, .venv, .pytest_cache or runs/
              if not any(part.startswith(".") or part == "runs" for part in p.relative_to(ROOT).parts))


def test_the_parser_reads_levels_files_and_continuations():
    dirs, files = parse_layout("a/  x.py (b/ is prose)\n  b/  y.py, <s>_m.json\n      z.md\n    c/\nt.txt  u.cfg\n")
    assert dirs == {"a", "a/b", "a/b/c"} and files == {"a/x.py", "a/b/y.py", "a/b/z.md", "t.txt", "u.cfg"}


def test_every_path_the_layout_map_names_exists():
    assert {"bigmodel/nn", "bigmodel/commands", "experiments", "tests"} <= DIRS
    assert not [d for d in sorted(DIRS) if not (ROOT / d).is_dir()], "named in README's Layout, not in the tree"
    assert not [f for f in sorted(FILES) if not (ROOT / f).is_file()], "named in README's Layout, not in the tree"


def test_every_directory_and_module_of_the_package_is_in_the_layout_map():
    package = ROOT / "bigmodel"
    folders = {p.relative_to(ROOT).as_posix() for p in package.rglob("*") if p.is_dir() and p.name != "__pycache__"}
    modules = {p.relative_to(ROOT).as_posix() for p in package.rglob("*.py") if p.name != "__init__.py"}
    assert sorted(folders - DIRS) == [], "add these folders to README's Layout"
    assert sorted(modules - FILES) == [], "add these modules to README's Layout"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(doc):
    text, broken = doc.read_text(encoding="utf-8"), []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (doc.parent / path).resolve() if path else doc
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text(encoding="utf-8")):
            broken.append(target)
    assert broken == []


def anchors(markdown: str) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    slugs, counts = set(), {}
    for heading in re.findall(r"^#{1,6} (.+)$", re.sub(r"```.*?```", "", markdown, flags=re.S), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        slugs.add(f"{slug}-{counts[slug]}" if slug in counts else slug)
        counts[slug] = counts.get(slug, 0) + 1
    return slugs


def test_anchors_follow_github():
    assert anchors("# Before/after: fused AdamW (CPU)\n```\n# not a heading\n```\n## A\n## A\n") == {
        "beforeafter-fused-adamw-cpu", "a", "a-1"}


def test_every_document_is_one_click_from_the_readme():
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in LINK.findall(README)}
    assert [d.relative_to(ROOT).as_posix() for d in DOCS if d != ROOT / "README.md" and d not in linked] == []


def test_every_experiment_file_the_documents_name_exists():
    """The commands' configs: `-c experiments/...yaml` in any README is a file (globs like modes/*.yaml aside)."""
    named = {m for doc in DOCS for m in re.findall(r"\bexperiments/[\w./-]+\.yaml\b", doc.read_text(encoding="utf-8"))}
    assert len(named) > 30
    assert sorted(path for path in named if not (ROOT / path).is_file()) == []
