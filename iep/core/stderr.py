"""Native libraries' own lines on stderr (libjpeg per corrupt image, TensorFlow's C++ start-up notices), hidden
where an error of ours says the same thing in words; `IEP_VERBOSE=1` brings all of them back."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

VERBOSE_ENV = "IEP_VERBOSE"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 on /dev/null for the block (unless IEP_VERBOSE is set): C libraries that print
    straight to it (libjpeg's "Improper call to JPEG library" per corrupt image) stay quiet; the Python error
    raised afterwards says what was wrong. Process-wide, so only around single-threaded scans."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
