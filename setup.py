"""Installs one import package, `iep`, with the root folders nets/, datasets/ and op_utils/ as its subpackages.

Why `package_dir`: the repository's layout keeps those folders at the root, but installed as top-level
packages `datasets` would shadow Hugging Face's (and `nets`, `op_utils` are generic names); as
`iep.datasets`, `iep.nets`, `iep.op_utils` nothing we install can clash. The train/eval/visualize commands
are `iep.apps.*` behind console scripts (the root scripts call the same code).
"""

from setuptools import find_packages, setup

SUBPACKAGES = ("datasets", "nets", "op_utils", "configs")  # configs/: the shipped flag files (package data)

setup(
    name="iep-kd",
    version="0.1.0",
    description="Interpretable Embedding Procedure knowledge distillation (and baselines) in TensorFlow 2 / Keras 3",
    python_requires=">=3.10",
    packages=[
        *find_packages(include=["iep", "iep.*"]),
        *(f"iep.{name}" for name in SUBPACKAGES),
        *(f"iep.{name}.{sub}" for name in SUBPACKAGES for sub in find_packages(where=name)),
    ],
    package_dir={f"iep.{name}": name for name in SUBPACKAGES},
    package_data={"iep.configs": ["*.cfg", "*/*.cfg", "*/*/*.cfg", "*/*/*/*.cfg", "*/*/*/*/*.cfg"]},
    install_requires=[
        # Upper bounds: the newest versions the test suite has passed on (TF 2.21, Keras 3.15). Lower bounds:
        # the oldest it passes on, tested by .ci/run against .ci/lowest.txt (Keras 3.3.3 fails building a
        # network, 3.4.1 and 3.5.0 crash at export; with TF 2.16 pin tensorflow-metadata<1.17, see there).
        "tensorflow>=2.16,<2.22",
        "keras>=3.6,<3.16",
        "tensorboard>=2.16",
        "tensorflow-datasets>=4.9",
        "importlib_resources>=5",  # tfds's download path imports it without depending on it (--download)
        "absl-py>=2.0",
        "numpy>=1.26",
        "scikit-learn>=1.3",
        "matplotlib>=3.7",
    ],
    # psutil: the timing benchmarks name other busy processes (benchmarks/timing.py); tfds installs it too
    extras_require={"dev": ["pytest>=8", "pytest-xdist>=3", "ruff>=0.6", "psutil>=5.9"]},
    entry_points={
        "console_scripts": [
            "iep-train=iep.apps.train:run",
            "iep-eval=iep.apps.evaluate:run",
            "iep-visualize=iep.apps.visualize:run",
        ]
    },
)
