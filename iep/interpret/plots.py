"""Figures of the embedding procedure (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.offsetbox import AnnotationBbox, OffsetImage  # noqa: E402

VIEW_AZIMUTHS = (30, 120, 210)


def _save(figure, path: str) -> None:
    figure.savefig(path, dpi=90)
    plt.close(figure)


def spca_views(
    compressed: np.ndarray,
    labels: np.ndarray,
    mean_colour: np.ndarray,
    class_names: Sequence[str],
    title: str,
    path: str,
) -> None:
    """Top-3 compressed PCs in 3-D from several angles; row 1 coloured by class, row 2 by mean image colour."""
    top3 = compressed[:, :3]
    figure = plt.figure(figsize=(4.2 * len(VIEW_AZIMUTHS), 8.4))
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for row, colours in enumerate((cmap(labels % cmap.N), mean_colour)):
        for col, azimuth in enumerate(VIEW_AZIMUTHS):
            axes = figure.add_subplot(2, len(VIEW_AZIMUTHS), row * len(VIEW_AZIMUTHS) + col + 1, projection="3d")
            axes.scatter(top3[:, 0], top3[:, 1], top3[:, 2], c=colours, s=2, depthshade=False, linewidths=0)
            axes.view_init(elev=20, azim=azimuth)
            axes.set_title(f"{'class' if row == 0 else 'mean colour'}, azimuth {azimuth}°", fontsize=9)
            axes.set_xticklabels([]), axes.set_yticklabels([]), axes.set_zticklabels([])
    handles = [plt.Line2D([], [], ls="", marker="o", color=cmap(i % cmap.N)) for i in range(len(class_names))]
    figure.legend(handles, class_names, loc="lower center", ncol=min(len(class_names), 10), fontsize=8)
    figure.suptitle(title)
    _save(figure, path)


def relation_heatmaps(matrices: Mapping[str, np.ndarray], title: str, path: str) -> None:
    """One heatmap per relation matrix (affinities A, MPNN readouts R, mean messages), same image order."""
    figure, axes = plt.subplots(1, len(matrices), figsize=(3.4 * len(matrices), 3.4), squeeze=False)
    for ax, (name, matrix) in zip(axes[0], matrices.items(), strict=True):
        shown = ax.imshow(matrix, cmap="viridis")
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(len(matrix))), ax.set_yticks(range(len(matrix)))
        figure.colorbar(shown, ax=ax, fraction=0.046)
    figure.suptitle(title)
    figure.tight_layout()
    _save(figure, path)


def relation_graph(images: np.ndarray, relation: np.ndarray, title: str, path: str, edges: int = 12) -> None:
    """The images as nodes on a circle; the `edges` strongest off-diagonal relations drawn, width ∝ strength."""
    count = len(images)
    angles = 2 * np.pi * np.arange(count) / count
    xy = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    figure, ax = plt.subplots(figsize=(5.5, 5.5))
    upper = [(relation[i, j] + relation[j, i], i, j) for i in range(count) for j in range(i + 1, count)]
    strongest = sorted(upper, reverse=True)[:edges]
    low, high = min(s for s, _, _ in upper), max(s for s, _, _ in upper)
    for strength, i, j in strongest:  # width by rank within this matrix's range, so weak contrasts stay visible
        width = 0.5 + 4.5 * (strength - low) / max(high - low, 1e-12)
        ax.plot(*zip(xy[i], xy[j], strict=True), color="tab:red", lw=width, alpha=0.7)
    for (x, y), image in zip(xy, images, strict=True):
        ax.add_artist(AnnotationBbox(OffsetImage(image.astype(np.uint8), zoom=1.2), (x, y), frameon=False))
    ax.set_xlim(-1.3, 1.3), ax.set_ylim(-1.3, 1.3), ax.set_aspect("equal"), ax.axis("off")
    ax.set_title(title, fontsize=10)
    _save(figure, path)


def embedding_grid(
    embeddings: Mapping[str, Mapping[str, np.ndarray]], labels: np.ndarray, title: str, path: str
) -> None:
    """One point's 2-D maps side by side: a row per method (t-SNE, IVIS), a column per network
    (embeddings[network][method] = [N, 2], the same N images coloured by class everywhere)."""
    networks = list(embeddings)
    methods = list(dict.fromkeys(m for per_net in embeddings.values() for m in per_net))
    figure, axes = plt.subplots(
        len(methods), len(networks), figsize=(3.4 * len(networks), 3.4 * len(methods)), squeeze=False
    )
    for row, method in enumerate(methods):
        for col, network in enumerate(networks):
            ax = axes[row][col]
            embedding = embeddings[network][method]
            ax.scatter(embedding[:, 0], embedding[:, 1], c=labels[: len(embedding)], cmap="tab10", s=2, linewidths=0)
            ax.set_title(f"{network}: {method}", fontsize=9)
            ax.set_xticks([]), ax.set_yticks([])
    figure.suptitle(title)
    figure.tight_layout()
    _save(figure, path)


def metric_curves(metrics: Mapping[str, Mapping[str, Mapping[str, float]]], space: str, path: str) -> None:
    """One panel per metric: value per sensing point, one line per network (metrics[network][point][metric])."""
    names = ("knn_accuracy", "silhouette", "intra_inter_ratio")
    figure, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6))
    for ax, metric in zip(axes, names, strict=True):
        colours = plt.get_cmap("tab10" if len(metrics) <= 10 else "tab20")
        for i, (network, per_point) in enumerate(metrics.items()):
            points = list(per_point)
            values = [per_point[p][space][metric] for p in points]
            style = {"color": colours(i % colours.N)}
            if network.split("_s")[0] in ("none", "vanilla"):  # the reference line of every comparison
                style = {"color": "black", "linestyle": "--"}
            ax.plot(range(len(points)), values, marker="o", label=network, **style)
            ax.set_xticks(range(len(points)), points)
        ax.set(title=metric, xlabel="sensing point")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # outside: many networks
    figure.suptitle(f"cluster metrics per sensing point ({space})")
    figure.tight_layout()
    _save(figure, path)


def image_scatter(coords: np.ndarray, images: np.ndarray, title: str, path: str) -> None:
    """Each row of `coords` drawn as its image (thumbnail) at that 2-D position."""
    figure, ax = plt.subplots(figsize=(7, 7))
    ax.scatter(coords[:, 0], coords[:, 1], s=4, c="tab:gray")
    zoom = 0.9 if len(coords) <= 32 else 0.55
    for (x, y), image in zip(coords, images, strict=True):
        ax.add_artist(AnnotationBbox(OffsetImage(image.astype(np.uint8), zoom=zoom), (x, y), frameon=False))
    pad = 0.1 * (np.ptp(coords, axis=0) + 1e-6)
    ax.set_xlim(coords[:, 0].min() - pad[0], coords[:, 0].max() + pad[0])
    ax.set_ylim(coords[:, 1].min() - pad[1], coords[:, 1].max() + pad[1])
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    _save(figure, path)


def image_rows(rows: Sequence[np.ndarray], labels: Sequence[str], title: str, path: str) -> None:
    """A grid: one row of images per label."""
    cols = max(len(r) for r in rows)
    figure, axes = plt.subplots(len(rows), cols, figsize=(1.1 * cols + 1, 1.1 * len(rows)), squeeze=False)
    for r, (images, label) in enumerate(zip(rows, labels, strict=True)):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(images):
                ax.imshow(images[c].astype(np.uint8))
        axes[r][0].set_title(label, fontsize=7, loc="left")
    figure.suptitle(title, fontsize=9)
    _save(figure, path)
