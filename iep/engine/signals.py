"""Installing a temporary SIGTERM/SIGINT handler, for the loop's step-boundary stop and for waits before it."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def stop_signals_handled_by(handler: Callable[[int, object], None]) -> Iterator[None]:
    """`handler` for SIGTERM and SIGINT inside the block, the previous handlers after it. Outside the main
    thread (where handlers cannot be installed) the signals keep their default behaviour."""
    previous = {}
    try:
        for signum in STOP_SIGNALS:
            previous[signum] = signal.signal(signum, handler)
    except ValueError:
        pass
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def stop_on_signals(requested: list[int]) -> Iterator[None]:
    """SIGTERM and SIGINT only record the request; the loop checks it after every step. A second signal
    stops at once (a step that never returns must not make the process unkillable)."""

    def handler(number, frame):
        requested.append(number)
        if len(requested) > 1:
            signal.signal(number, signal.SIG_DFL)
            os.kill(os.getpid(), number)

    with stop_signals_handled_by(handler):
        yield
