"""Walking an exception's causes: data readers and the command's error printer both ask what lies under an error."""

from __future__ import annotations


def error_chain(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen
