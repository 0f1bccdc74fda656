"""Image classifiers that expose their sensing points (docs/methods.md §1)."""

from iep.nets.base import TappedNetwork, TapSpec, check_tapped, image_shape_problem
from iep.nets.factory import ARCH_HELP, build_network, checked_input_shape, default_dropout, parse_arch

__all__ = [
    "ARCH_HELP",
    "TapSpec",
    "TappedNetwork",
    "build_network",
    "check_tapped",
    "checked_input_shape",
    "default_dropout",
    "image_shape_problem",
    "parse_arch",
]
