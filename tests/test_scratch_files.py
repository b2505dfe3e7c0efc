"""The files the documentation's commands tell a user to write (inputs to predict, redirected logs, exported models)
are ignored by git, so following the README and the notes beside the code leaves a clean checkout."""

import fnmatch
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ignored(path: str, patterns: list[str]) -> bool:
    first = path.strip("/").split("/")[0]
    return any(fnmatch.fnmatch(first, p.rstrip("/")) if p.endswith("/") else fnmatch.fnmatch(Path(path).name, p)
               for p in patterns)


def test_every_scratch_file_of_the_readme_is_ignored():
    patterns = [line.strip() for line in (ROOT / ".gitignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    readme = "\n".join(p.read_text(encoding="utf-8") for p in sorted(ROOT.glob("**/README.md"))
                       if not any(part.startswith(".") or part == "runs" for part in p.relative_to(ROOT).parts))
    written = set(re.findall(r"> ?([\w.-]+\.(?:txt|log))\b", readme))  # printf ... > texts.txt, ... > fit.log
    written |= set(re.findall(r"--out (exported/[\w.-]+)", readme))  # bigmodel export --out exported/x
    written |= set(re.findall(r"write_digit_images\('([\w.-]+)'\)", readme))  # the digits to predict
    assert {"texts.txt", "prompts.txt", "fit.log", "exported/sst2-mini", "my_digits"} <= written, written
    assert [p for p in sorted(written) if not ignored(p, patterns)] == []
