"""`--config=NAME`: a shipped flag file (configs/NAME, installed as the `iep.configs` package data), from any
directory.

Why not absl's `--flagfile` alone: it reads paths relative to the working directory, so the shipped files'
own `--flagfile=configs/...` lines only work from the repository root. Here `--config` and every nested
`--flagfile=configs/...` resolve against the configs folder, wherever the package is; the file's flags take
the place of `--config=...` on the command line, so flags after it override them (absl: the last one wins).
"""

from __future__ import annotations

import importlib
import os

CONFIG_FLAG = "--config="
CONFIGS_PREFIX = "configs/"


def config_root() -> str:
    """The folder of shipped configs: configs/ in a source tree, iep/configs when installed."""
    return os.path.dirname(os.path.abspath(importlib.import_module("iep.configs").__file__))


def _resolve(path: str, flag: str) -> str:
    if os.path.isfile(path):
        return path
    name = path[len(CONFIGS_PREFIX) :] if path.startswith(CONFIGS_PREFIX) else path
    shipped = os.path.join(config_root(), name)
    if os.path.isfile(shipped):
        return shipped
    raise ValueError(f"{flag}{path}: neither a file here nor a shipped config under {config_root()}")


def _flags_of(path: str, flag: str, seen: tuple[str, ...]) -> list[str]:
    real = os.path.realpath(_resolve(path, flag))
    if real in seen:
        raise ValueError(f"{flag}{path}: the flag files include each other ({' -> '.join([*seen, real])})")
    out = []
    for line in open(real).read().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "//")):
            continue
        if line.startswith("--flagfile="):
            out += _flags_of(line[len("--flagfile=") :], "--flagfile=", (*seen, real))
        elif line.startswith(CONFIG_FLAG):
            out += _flags_of(line[len(CONFIG_FLAG) :], CONFIG_FLAG, (*seen, real))
        else:
            out.append(line)
    return out


def expand_configs(argv: list[str]) -> list[str]:
    """argv with each `--config=NAME` and `--flagfile=PATH` replaced by the flags of that file (nested ones
    expanded; a `configs/...` path that is not there is read from the shipped configs)."""
    out = list(argv[:1])
    for arg in argv[1:]:
        for flag in (CONFIG_FLAG, "--flagfile="):
            if arg.startswith(flag):
                out += _flags_of(arg[len(flag) :], flag, ())
                break
        else:
            out.append(arg)
    return out


def config_training(run_dir: str) -> str | None:
    """The shipped config whose run writes `run_dir` (e.g. the teacher a table's configs read), or None."""
    target = os.path.normpath(run_dir)
    root = config_root()
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            if not name.endswith(".cfg"):
                continue
            path = os.path.join(folder, name)
            lines = [line.strip() for line in open(path).read().splitlines()]
            if any(line.startswith("--run_dir=") and os.path.normpath(line[10:]) == target for line in lines):
                return os.path.relpath(path, root)
    return None
