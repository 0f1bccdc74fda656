"""Run-directory file helpers. Writes are atomic so an interrupted run never leaves a torn file."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any


def check_writable(directory: str, what: str) -> None:
    """Writes a probe file in `directory` (creating it, then removing what it created): a read-only location
    is one error naming it, before any compute, instead of a traceback at the first checkpoint."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(f"{what} {directory!r} is a file; expected a directory")
    created = os.path.abspath(directory)
    while not os.path.exists(os.path.dirname(created)) and os.path.dirname(created) != created:
        created = os.path.dirname(created)  # the outermost folder this probe will create
    created = None if os.path.exists(created) else created
    try:
        os.makedirs(directory, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise ValueError(f"{what} {directory!r} is not writable ({error.strerror or error})") from None
    finally:
        if created and os.path.isdir(created):
            shutil.rmtree(created, ignore_errors=True)


def write_json_atomic(path: str, payload: Any) -> None:
    """Writes `payload` as JSON by rename, so a reader never sees a torn file; a full or read-only disk is a
    ValueError naming the path (and leaves no temporary file)."""
    write_bytes_atomic(path, json.dumps(payload, indent=2, sort_keys=True).encode("utf-8"))


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Writes `data` by rename (never a torn file); a failed write is a ValueError naming the path."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.splitext(path)[1])
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(error, OSError):
            raise ValueError(f"cannot write {path} ({error.strerror or error})") from None
        raise


def read_json(path: str) -> Any:
    """The file's JSON; a damaged file is a ValueError naming it (not a JSONDecodeError traceback)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is damaged (not valid JSON: {error}); restore or delete it") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a folder where a JSON file belongs; move it aside") from None
