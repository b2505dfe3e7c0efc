"""The ``bigmodel`` command. Its overview (``bigmodel``, ``bigmodel --help``) prints before Lightning is imported,
so it comes at once; everything else goes to ``bigmodel.commands.cli``."""

from __future__ import annotations

import sys

from bigmodel.commands import COMMANDS, OVERVIEW


# commands that read sweep summaries only: they run without importing Lightning (seconds a command)
SUMMARY_COMMANDS = ("results", "compare")


def _summary_command(argv: list[str]) -> None:
    """``results`` or ``compare``, with the one-line errors of every command (``run.errors``)."""
    import importlib
    import os

    from bigmodel.run import errors

    try:
        importlib.import_module(f"bigmodel.commands.{argv[0]}").main(argv[1:])
    except Exception as err:
        message = None if os.environ.get("BIGMODEL_DEBUG") else errors.user_message(err)
        if message is None:
            raise
        print(f"bigmodel: error: {message}", file=sys.stderr)
        sys.exit(2)


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
    if argv[0] in SUMMARY_COMMANDS:
        return _summary_command(argv)
    try:
        from bigmodel.commands.cli import main as cli_main  # Lightning, torch, transformers: seconds
    except KeyboardInterrupt:
        print("bigmodel: interrupted by Ctrl-C while starting; nothing ran", file=sys.stderr)
        sys.exit(130)
    cli_main()


if __name__ == "__main__":
    main()
