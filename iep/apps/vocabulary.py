"""The commands' words for the library's: an error raised in Python names what a Python caller passed
(`TrainConfig.lr`, `DataConfig.rate`, `teacher=`, `run_dir='runs/x'`); the command line says the flag (`--lr`,
`--rate`, `--teacher`, `--run_dir='runs/x'`). One set of checks in the library, two vocabularies; this module is
the command line's."""

from __future__ import annotations

import re

# Python's words → the flag's, where the flag is not simply `--<field>`.
RENAMED = {
    "Trainer.fit(resume=False)": "--noresume",
    "build_distiller: method": "--distill",
    "set DataConfig.download": "add --download",
    "the transfer protocol (RunSpec.knowledge_epochs)": "--protocol=transfer",  # iep.engine.run_spec.TRANSFER
    "RunSpec.distill_options": "--distill_args",
    "TeacherSpec.path": "--teacher",
    "TeacherSpec.arch": "--teacher_arch",
}
FIELD = re.compile(r"\b(?:TrainConfig|DataConfig|RunSpec)\.(\w+)")
# A keyword argument as the library writes it: `name=value` or a bare `name=` (the argument itself).
KEYWORD = re.compile(r"(?<![\w.\-`])([a-z]\w*)=(?=([^\s,;:).=]?))")
ALWAYS = {"teacher"}  # keywords translated even when the caller gives no flag set
# A keyword whose flag has another name: the teacher's loader says `taps=`, train.py's flag is --teacher_taps.
ALIASES = {
    "taps": "teacher_taps",
    "preprocess": "teacher_preprocess",
    "knowledge": "iep_knowledge",
    "module_steps": "iep_module_steps",
    "dim": "semantic_vectors",
}


def in_flags(message: str, flags: set[str] | None = None) -> str:
    """`message` with each library name of a setting replaced by its flag (a field or keyword that is no flag
    of the command, such as `keep_checkpoints`, keeps its Python name)."""
    for python, flag in RENAMED.items():
        message = message.replace(python, flag)
    message = FIELD.sub(lambda m: f"--{m.group(1)}" if flags is None or m.group(1) in flags else m.group(0), message)

    def keyword(match: re.Match) -> str:
        name, value_follows = match.group(1), bool(match.group(2))
        if flags is not None and name not in flags and ALIASES.get(name) in flags:
            name = ALIASES[name]
        if name not in ALWAYS and (flags is None or name not in flags):
            return match.group(0)
        return f"--{name}=" if value_follows else f"--{name}"

    return KEYWORD.sub(keyword, message)
