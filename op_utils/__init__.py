"""Numerical building blocks shared by training and the KD methods."""

from iep.op_utils.regularizers import decayed_variables, l2_penalty
from iep.op_utils.schedules import SCHEDULES, build_schedule

__all__ = ["SCHEDULES", "build_schedule", "decayed_variables", "l2_penalty"]
