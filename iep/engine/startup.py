"""Process start-up of the command-line tools: TensorFlow's start-up notices hidden, flag errors as exit 2.

Why: TensorFlow 2.16+ logs from C++ through absl before `TF_CPP_MIN_LOG_LEVEL`
applies (the oneDNN notice, and on CPU-only machines a CUDA probe's "failed
call to cuInit"), so every one-line error of ours arrived under a screen of
noise. `IEP_VERBOSE=1` brings all of it back.
"""

from __future__ import annotations

import os
import sys

from iep.core.stderr import native_stderr_silenced, verbose


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow and enumerates its devices with stderr closed, unless IEP_VERBOSE is set."""
    if verbose():
        return
    # 3: also TensorFlow's C++ ERROR lines (a corrupt JPEG logs "Premature end of JPEG data" before the
    # DataError of ours that names the file); every error that stops a run reaches Python and is said there.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:  # already imported (e.g. by a test runner): nothing left to hide
        return
    with native_stderr_silenced():
        import tensorflow as tf

        tf.config.list_physical_devices()  # the platform probes log here; logical devices stay configurable


def parse_flags_or_exit(argv: list[str]) -> list[str]:
    """absl's flag parsing, but a bad flag is one line and exit status 2 like every other user error."""
    from absl import flags

    from iep.engine.configs import expand_configs

    try:
        rest = flags.FLAGS(expand_configs(argv))
    except (flags.Error, ValueError) as error:  # ValueError: a --config that names no file
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    expand_home(flags.FLAGS)
    return rest


def expand_home(flag_values) -> None:
    """`~` at the start of any string (or list item) flag is the user's home, as a shell would have expanded it
    unquoted: `--data_dir=~/data` is not expanded by the shell (the `=` precedes the `~`)."""
    for name in list(flag_values):
        value = flag_values[name].value
        if isinstance(value, str) and value.startswith("~"):
            flag_values[name].value = os.path.expanduser(value)
        elif isinstance(value, list) and any(isinstance(v, str) and v.startswith("~") for v in value):
            flag_values[name].value = [os.path.expanduser(v) if isinstance(v, str) else v for v in value]
