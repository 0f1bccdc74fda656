"""Pictures of static knowledge (iep/static): where each neuron's semantic vector lies, and what it responds to.

Here, not in iep/static, because drawing is the interpret layer's job: iep/static never imports iep/interpret."""

from __future__ import annotations

import numpy as np

from iep.interpret import plots
from iep.static.knowledge_file import StaticKnowledge


def vector_map(vectors: np.ndarray) -> np.ndarray:
    """[C, 2]: the unit vectors' top-2 principal components (deterministic, unlike a t-SNE of a few dozen)."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    centred = unit - unit.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt[:2].T
    return coords if coords.shape[1] == 2 else np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))


def top_images(pooled: np.ndarray, k: int) -> np.ndarray:
    """[C, k] indices of the images with the highest spatially pooled response of each channel."""
    return np.argsort(-pooled, axis=0)[:k].T


def check_matches(knowledge: StaticKnowledge, channels: list[int], what: str) -> None:
    if knowledge.channels != channels:
        raise ValueError(
            f"the static knowledge (static_knowledge=) holds {knowledge.describe()}; {what} has {channels} channels: "
            "draw it with the network it was learned on"
        )


def draw_static_knowledge(
    knowledge: StaticKnowledge, pooled: list[np.ndarray], images: np.ndarray, points: list[int], out_prefix: str
) -> dict[str, float]:
    """Per point: `<prefix>_point<i>_map.png` (vectors in 2-D, each neuron shown by its top image) and
    `<prefix>_point<i>_neurons.png` (16 neurons along the map's first axis, their top-5 images each)."""
    scores = knowledge.metadata.get("alignment_score") or [float("nan")] * len(knowledge.vectors)
    for p in points:
        coords = vector_map(knowledge.vectors[p])
        best = top_images(pooled[p], 5)
        name = knowledge.metadata["points"][p]["name"]
        title = f"point {p} ({name}): {len(coords)} neurons, alignment score {scores[p]:.3f}"
        plots.image_scatter(coords, images[best[:, 0]], title, f"{out_prefix}_point{p}_map.png")
        order = np.argsort(coords[:, 0])
        shown = order[np.linspace(0, len(order) - 1, min(16, len(order))).astype(int)]
        rows = [images[best[c]] for c in shown]
        plots.image_rows(
            rows, [f"neuron {c}" for c in shown], f"{title}: top-5 images", f"{out_prefix}_point{p}_neurons.png"
        )
    return {f"point{p}": float(scores[p]) for p in points}
