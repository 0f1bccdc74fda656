"""iep: knowledge distillation for image classifiers in TensorFlow 2 / Keras 3.

The repository keeps `datasets/`, `nets/` and `op_utils/` beside `iep/` (the project's layout), but they are
only ever imported as `iep.datasets`, `iep.nets` and `iep.op_utils`: installed, setup.py's `package_dir`
puts them inside the `iep` package; from a source tree, the root is appended to this package's search path
below. Either way no top-level name of ours can shadow another distribution (Hugging Face's `datasets`).
"""

from __future__ import annotations

import os
import sys

__version__ = "0.1.0"

SUBPACKAGES = ("datasets", "nets", "op_utils")
_HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_ROOT = os.path.dirname(_HERE)

if not os.path.isdir(os.path.join(_HERE, "nets")) and all(
    os.path.isfile(os.path.join(SOURCE_ROOT, name, "__init__.py")) for name in SUBPACKAGES
):
    __path__.append(SOURCE_ROOT)  # noqa: F821  (a package's module-level __path__)


def leave_source_root_off_sys_path() -> None:
    """Removes the source tree's root from `sys.path` (Python puts it there for `python train.py` and
    `python -m iep.demo` run from the root).

    Why: as a path entry the root's `datasets/` folder would be imported for `import datasets`, shadowing
    Hugging Face's package (which tfds imports). `iep` is already imported by then, and its subpackages
    resolve through its own `__path__`.
    """
    root = os.path.realpath(SOURCE_ROOT)
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.getcwd()) != root]


# The public surface, imported on first use (PEP 562): `import iep` stays cheap for the command-line tools, which
# import TensorFlow quietly first. The deep paths (iep.engine.trainer.Trainer, ...) stay as they are.
_PUBLIC = {
    "Trainer": ("iep.engine.trainer", "Trainer"),
    "TrainConfig": ("iep.engine.trainer", "TrainConfig"),
    "build_distiller": ("iep.core.registry", "build_distiller"),
    "register": ("iep.core.registry", "register"),
    "load_teacher": ("iep.engine.teacher", "load_teacher"),
    "tap_model": ("iep.engine.outside_teacher", "tap_model"),
    "build_network": ("iep.nets", "build_network"),
    "TappedNetwork": ("iep.nets", "TappedNetwork"),
    "UserData": ("iep.datasets.user_data", "UserData"),
    "DistillationModel": ("iep.keras_fit", "DistillationModel"),
    "Distiller": ("iep.core.distiller", "Distiller"),
    "RunSpec": ("iep.engine.run_spec", "RunSpec"),
    "TeacherSpec": ("iep.engine.run_spec", "TeacherSpec"),
    "train_run": ("iep.engine.run_spec", "train_run"),
}
__all__ = ["__version__", *_PUBLIC, "methods"]


def __getattr__(name: str):
    import importlib

    if name in _PUBLIC:
        module, attribute = _PUBLIC[name]
        from iep.engine.startup import import_tensorflow_quietly

        import_tensorflow_quietly()  # TensorFlow's C++ start-up notices, hidden as the commands hide them
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value  # once
        return value
    if name == "methods":  # the registry module: iep.methods.methods(), .register, .build_distiller, ...
        return importlib.import_module("iep.methods")
    raise AttributeError(f"module 'iep' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
