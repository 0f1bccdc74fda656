"""The foundation every KD method builds on: the `Distiller` interface, the clipped multi-task distiller, the
method registry, errors and atomic files. It imports no method and no part of the loop (tests/test_structure.py)."""
