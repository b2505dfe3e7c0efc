"""The ``bigmodel`` command. Its overview (``bigmodel``, ``bigmodel --help``) prints before Lightning is imported,
so it comes at once; everything else goes to ``bigmodel.commands.cli``."""

from __future__ import annotations

import sys

from bigmodel.commands import COMMANDS, OVERVIEW


def main() -> None:
    argv = sys.argv[1:]
    if argv in (["-h"], ["--help"]):
        print(OVERVIEW, end="")
        return
    if not argv:
        print(OVERVIEW, end="", file=sys.stderr)
        sys.exit(2)
    if not argv[0].startswith("-") and argv[0] not in COMMANDS:
        print(f"bigmodel: error: unknown command {argv[0]!r}; choose one of {', '.join(COMMANDS)} -- see "
              "`bigmodel --help`", file=sys.stderr)
        sys.exit(2)
    try:
        from bigmodel.commands.cli import main as cli_main  # Lightning, torch, transformers: seconds
    except KeyboardInterrupt:
        print("bigmodel: interrupted by Ctrl-C while starting; nothing ran", file=sys.stderr)
        sys.exit(130)
    cli_main()


if __name__ == "__main__":
    main()
