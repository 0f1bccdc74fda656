"""The commands' words for the library's: an error raised in Python names what a Python caller passed
(`TrainConfig.lr`, `DataConfig.rate`, `teacher=`); the command line says the flag (`--lr`, `--rate`,
`--teacher`). One set of checks in the library, two vocabularies; this module is the command line's."""

from __future__ import annotations

import re

# Python's words → the flag's, where the flag is not simply `--<field>`.
RENAMED = {
    "Trainer.fit(resume=False)": "--noresume",
    "teacher=": "--teacher",
    "static_knowledge=": "--static_knowledge=<file>",
    "build_distiller: method": "--distill",
}
FIELD = re.compile(r"\b(?:TrainConfig|DataConfig)\.(\w+)")


def in_flags(message: str, flags: set[str] | None = None) -> str:
    """`message` with each library name of a setting replaced by its flag (a field that is no flag of the
    command, such as `keep_checkpoints`, keeps its Python name)."""
    for python, flag in RENAMED.items():
        message = message.replace(python, flag)
    return FIELD.sub(lambda m: f"--{m.group(1)}" if flags is None or m.group(1) in flags else m.group(0), message)
