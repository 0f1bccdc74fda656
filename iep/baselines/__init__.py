"""Baseline KD methods on the same loop as IEP; each module documents its source and defaults."""
