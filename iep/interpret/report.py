"""The whole interpretability report for a teacher and its students (what `visualize.py` runs)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from iep.core.files import write_json_atomic
from iep.datasets import build_pipeline
from iep.engine.runs import load_run_config, run_data_config
from iep.engine.teacher import load_teacher
from iep.interpret import features as F
from iep.interpret import plots
from iep.interpret.embedding import EMBEDDINGS, check_embeddings, embed_and_score
from iep.interpret.modules import graph_matrices, load_iep_modules, pick_graph_images
from iep.interpret.projector import write_projector


def _network_name(run_dir: str) -> str:
    return os.path.basename(os.path.normpath(run_dir))


def _select_points(network, points: list[int] | None, label: str) -> list[int]:
    count = len(network.tap_specs)
    wanted = list(range(count)) if points is None else points
    bad = [p for p in wanted if not 0 <= p < count]
    if bad:
        names = [f"{t.name} {t.shape}" for t in network.tap_specs]
        raise ValueError(f"points={bad}: {label} ({network.arch}) has {count} sensing points: {names}")
    return wanted


def _kept(keep: tf.Tensor):
    def kept(i, xy):
        return keep[i]

    return kept


def _drop_index(i, xy):
    return xy


def visualize(
    teacher: str,
    students: Sequence[str] = (),
    iep_run: str | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    split: str = "test",
    limit: int | None = None,
    tsne_limit: int = 2000,
    embeddings: Sequence[str] = EMBEDDINGS,
    ivis_fit_split: str = "train",
    ivis_fit_limit: int = 5000,
    ivis_epochs: int = 100,
    graph_images: int = 8,
    static_knowledge: str | None = None,
    points: Sequence[int] | None = None,
    projector: bool = True,
    seed: int = 0,
    batch_size: int = 500,
    out: str = "runs/visualize",
    cache_dir: str | None = None,
) -> dict:
    """Writes every view under `out`; returns the cluster metrics {network: {point: {space: {metric}}}}.

    `limit` keeps a seeded random subset of the split (in split order); t-SNE, IVIS and the metrics use the
    first `tsne_limit` images of it. IVIS learns its mapping on a seeded subset of `ivis_fit_limit` images
    of `ivis_fit_split` and embeds the split's images with it (t-SNE cannot embed unseen points).
    """
    points = list(points) if points else None
    embeddings = check_embeddings(embeddings)
    if limit is not None and limit < 2:
        raise ValueError(f"limit={limit}: must be >= 2")
    if ivis_fit_limit < 3:
        raise ValueError(f"ivis_fit_limit={ivis_fit_limit}: must be >= 3")
    try:  # before any compute: an --out that cannot be written used to fail after the features were extracted
        for sub in ("spca", "embeddings", "graphs"):
            os.makedirs(os.path.join(out, sub), exist_ok=True)
    except OSError as error:
        raise ValueError(f"out={out!r} cannot be created ({error.strerror})") from None
    config = load_run_config(teacher, "teacher=")
    for run_dir in students:  # before any image is decoded
        load_run_config(run_dir, "students=")
    if dataset and dataset != config["dataset"]:  # another data set: none of the run's data settings apply
        config = {"dataset": dataset, "input_shape": config["input_shape"]}
    data = build_pipeline(run_data_config(config, data_dir=data_dir or config.get("data_dir"), cache_dir=cache_dir))
    shape = data.input_shape
    teacher_name = _network_name(teacher)
    networks = {teacher_name: load_teacher(teacher, None, data.num_classes, shape, arch_flag=None)}
    for run_dir in students:
        net = load_teacher(run_dir, None, data.num_classes, shape, flag="students=", name="student", arch_flag=None)
        networks[_network_name(run_dir)] = net
    selected = {name: _select_points(net, points, name) for name, net in networks.items()}
    iep = load_iep_modules(iep_run, data, teacher) if iep_run else None
    knowledge = None
    if static_knowledge:
        from iep.interpret.static_views import check_matches
        from iep.static.knowledge_file import load_static_knowledge

        knowledge = load_static_knowledge(static_knowledge)
        check_matches(knowledge, [s.shape[-1] for s in networks[teacher_name].tap_specs], f"teacher {teacher!r}")

    def subset(split_name: str, count: int | None):
        """A seeded random subset in split order (splits are often sorted by class); all images without a count."""
        keep = None
        if count:
            total = sum(int(y.shape[0]) for _, y in data.eval_dataset(split_name, batch_size))
            chosen = np.random.default_rng(seed).permutation(total)[: min(count, total)]
            keep = tf.constant(np.isin(np.arange(total), chosen))

        def batches():
            dataset = data.eval_dataset(split_name, batch_size)
            if keep is not None:
                dataset = dataset.unbatch().enumerate().filter(_kept(keep)).map(_drop_index).batch(batch_size)
            return dataset

        return batches

    batches = subset(split, limit)
    fit_batches = subset(ivis_fit_split, ivis_fit_limit) if "ivis" in embeddings else None

    images = np.concatenate([x.numpy() for x, _ in batches()]).astype(np.uint8)
    metrics, projector_tensors, split_features, spca_of, maps_of_point = {}, {}, None, {}, {}
    for name, net in networks.items():
        use_trained = iep is not None and name == teacher_name
        spca_of[name] = iep.spca if use_trained else F.fit_spca(net, batches())
        split_features = feats = F.collect(net, batches(), spca_of[name])
        for p in selected[name]:
            plots.spca_views(
                feats.compressed[p],
                feats.labels,
                feats.mean_colour,
                data.class_names,
                f"{name}: SPCA of sensing point {p} ({net.tap_specs[p].name})",
                os.path.join(out, "spca", f"{name}_point{p}.png"),
            )
            projector_tensors[f"{name}_point{p}"] = feats.compressed[p]
        fit_pooled = F.collect_pooled(net, fit_batches()) if fit_batches else None
        maps, scores = embed_and_score(
            [feats.pooled[p] for p in selected[name]],
            feats.labels,
            tsne_limit,
            seed,
            embeddings,
            [fit_pooled[p] for p in selected[name]] if fit_pooled else None,
            ivis_epochs,
        )
        metrics[name] = {f"point{p}": m for p, m in zip(selected[name], scores, strict=True)}
        if knowledge is not None and name == teacher_name:
            from iep.interpret.static_views import draw_static_knowledge

            os.makedirs(os.path.join(out, "static"), exist_ok=True)
            prefix = os.path.join(out, "static", name)
            draw_static_knowledge(knowledge, feats.pooled, images, selected[name], prefix)
        for i, p in enumerate(selected[name]):
            maps_of_point.setdefault(p, {})[name] = {method: maps[method][i] for method in embeddings}
        print(f"{name}: " + json.dumps({p: round(m["features"]["knn_accuracy"], 4) for p, m in metrics[name].items()}))
    for p, per_network in maps_of_point.items():
        plots.embedding_grid(
            per_network,
            split_features.labels,
            f"sensing point {p}: pooled features in 2-D ({', '.join(embeddings)}; {split})",
            os.path.join(out, "embeddings", f"point{p}.png"),
        )
    if projector:
        write_projector(
            os.path.join(out, "projector"),
            projector_tensors,
            split_features.labels,
            data.class_names,
            split_features.mean_colour,
            images,
        )
    chosen = pick_graph_images(split_features.labels, graph_images, seed)
    matrices = graph_matrices(
        networks[teacher_name], spca_of[teacher_name], iep, tf.constant(images[chosen], tf.float32)
    )
    for p, per_point in enumerate(matrices):
        title = f"teacher sensing point {p}" if p == 0 else f"teacher points {p - 1}→{p}"
        plots.relation_heatmaps(per_point, title, os.path.join(out, "graphs", f"point{p}_heatmaps.png"))
        for key, matrix in per_point.items():
            plots.relation_graph(
                images[chosen], matrix, f"{title}: {key}", os.path.join(out, "graphs", f"point{p}_{key}.png")
            )
    write_json_atomic(
        os.path.join(out, "cluster_metrics.json"),
        {"split": split, "images": int(len(images)), "tsne_images": min(tsne_limit, len(images)),
         "embeddings": embeddings, "ivis_fit": {"split": ivis_fit_split, "limit": ivis_fit_limit},
         "seed": seed, "graph_images": [int(i) for i in chosen], "metrics": metrics},
    )  # fmt: skip
    for space in ("features", *embeddings):
        plots.metric_curves(metrics, space, os.path.join(out, f"cluster_metrics_{space}.png"))
    print(f"wrote {out}/ (spca/, embeddings/, graphs/, projector/, cluster_metrics.json)")
    return metrics
