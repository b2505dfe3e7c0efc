"""After a hangup (the terminal window closed, an ssh connection dropped) every write to that terminal fails: what
writes there is pointed at /dev/null so that a stop is not ended by its own notice."""

from __future__ import annotations

import errno
import os


def leave_hung_up_terminal(fds: tuple[int, ...] = (1, 2)) -> list[int]:
    """Points each of ``fds`` (stdout, stderr) that is a terminal which hung up at /dev/null, and returns those.
    After a hangup every write to that terminal fails (EIO): a progress line, or the notice of the stop itself, would
    end in an error what should end at a saved step. A live terminal (``kill -HUP`` from another shell), a file or a
    pipe (``nohup``, ``> log``) is left as it is, and so is everything where the platform has no termios (Windows,
    which has no SIGHUP either): called from the signal handlers, this must never fail the stop."""
    try:
        import termios
    except ImportError:
        return []

    left = []
    for fd in fds:
        try:
            termios.tcgetattr(fd)
            continue  # a terminal that still works
        except termios.error as err:
            if err.args[0] != errno.EIO:  # not a terminal (ENOTTY), or not open (EBADF)
                continue
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
        left.append(fd)
    return left
