"""Installs the iep library (iep, nets, op_utils, datasets) and the train/eval scripts."""

from setuptools import find_packages, setup

setup(
    name="iep-kd",
    version="0.1.0",
    description="Interpretable Embedding Procedure knowledge distillation (and baselines) in TensorFlow 2 / Keras 3",
    python_requires=">=3.10",
    packages=find_packages(
        include=["iep", "iep.*", "nets", "nets.*", "op_utils", "op_utils.*", "datasets", "datasets.*"]
    ),
    py_modules=["train", "eval", "visualize"],
    install_requires=[
        "tensorflow>=2.16,<3",
        "keras>=3.3",
        "tensorboard>=2.16",
        "tensorflow-datasets>=4.9",
        "absl-py>=2.0",
        "numpy>=1.26",
        "scikit-learn>=1.3",
        "matplotlib>=3.7",
    ],
    extras_require={"dev": ["pytest>=8", "ruff>=0.6"]},
    entry_points={"console_scripts": ["iep-train=train:run", "iep-eval=eval:run", "iep-visualize=visualize:run"]},
)
