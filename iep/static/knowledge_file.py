"""The static-knowledge file: a network's semantic vectors, one `.npz` per teacher run.

Layout (NumPy `.npz`, loadable without pickle):
  point<i>_vectors   float32 [C_i, d]: the semantic vector of every channel of sensing point i
  metadata           a JSON string: {"format": "iep-static-knowledge", "version": 1, "arch", "points":
                     [{"name", "shape": [H, W, C]}], "dim", "data": {"dataset", "data_dir", "class_names"},
                     "alignment_score": [per point], "learned": "joint" | "post_hoc", "source": run dir}
The teacher network is not needed to use it: that is the point of static knowledge.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os

import numpy as np

from iep.core.files import write_bytes_atomic

FORMAT, VERSION = "iep-static-knowledge", 1
DEFAULT_NAME = "static_knowledge.npz"


@dataclasses.dataclass
class StaticKnowledge:
    vectors: list[np.ndarray]  # per point [C_i, d]
    metadata: dict

    @property
    def channels(self) -> list[int]:
        return [int(v.shape[0]) for v in self.vectors]

    def describe(self) -> str:
        return f"{self.metadata.get('arch')} with {len(self.vectors)} points of {self.channels} channels"


def save_static_knowledge(path: str, knowledge: StaticKnowledge) -> str:
    metadata = {"format": FORMAT, "version": VERSION, **knowledge.metadata}
    buffer = io.BytesIO()
    arrays = {f"point{i}_vectors": np.asarray(v, np.float32) for i, v in enumerate(knowledge.vectors)}
    np.savez(buffer, metadata=np.array(json.dumps(metadata)), **arrays)
    write_bytes_atomic(path, buffer.getvalue())
    return path


def load_static_knowledge(path: str, flag: str = "static_knowledge=") -> StaticKnowledge:
    """Reads and checks the file; anything else is one error naming it."""
    if os.path.isdir(path):
        path = os.path.join(path, DEFAULT_NAME)
    if not os.path.exists(path):
        raise ValueError(f"{flag}{path!r} does not exist (write one with python -m iep.static.learn)")
    try:
        with np.load(path, allow_pickle=False) as data:
            metadata = json.loads(str(data["metadata"]))
            count = len(metadata["points"])
            vectors = [np.asarray(data[f"point{i}_vectors"], np.float32) for i in range(count)]
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{flag}{path!r} is not a static-knowledge file ({error.__class__.__name__}: {error})"
        ) from None
    if metadata.get("format") != FORMAT or metadata.get("version") != VERSION:
        raise ValueError(
            f"{flag}{path!r}: format {metadata.get('format')!r} v{metadata.get('version')}, "
            f"expected {FORMAT!r} v{VERSION}"
        )
    for i, (v, point) in enumerate(zip(vectors, metadata["points"], strict=True)):
        if v.ndim != 2 or v.shape[0] != point["shape"][-1] or not np.isfinite(v).all():
            raise ValueError(
                f"{flag}{path!r}: point{i}_vectors has shape {v.shape} (finite [{point['shape'][-1]}, d] expected)"
            )
    return StaticKnowledge(vectors, {k: v for k, v in metadata.items() if k not in ("format", "version")})
