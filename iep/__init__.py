"""iep: knowledge distillation for image classifiers in TensorFlow 2 / Keras 3."""

__version__ = "0.1.0"
