"""`--distill` names → Distiller objects: the method registry (`iep.core.registry`) under its public name.

`iep.methods.register` makes your Distiller a `--distill` method; `build_distiller`, `methods()`,
`method_options(name)` and the rest are described in `iep/core/registry.py`.
"""

from iep.core.registry import *  # noqa: F403
from iep.core.registry import __all__  # noqa: F401
