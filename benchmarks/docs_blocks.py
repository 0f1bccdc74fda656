"""The docs' measured figures, generated from the benchmarks' results files between markers.

  python benchmarks/docs_blocks.py           # rewrites every block below from its results file

A timing benchmark rewrites its own block after writing its results; `tests/test_docs.py` fails when a block
differs from what its results file gives now, so no figure in the docs is typed by hand or goes stale. Times are
CPU time (the ratios' clock, benchmarks/timing.py says why) beside wall time, and every block says on what
machine and under what load it was measured.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(ROOT, "benchmarks", "results")
DOCS = os.path.join(ROOT, "docs")


def markers(name: str, script: str) -> tuple[str, str]:
    return f"<!-- {name}:begin ({script}) -->", f"<!-- {name}:end -->"


def rewrite(text: str, name: str, block: str) -> str:
    """`text` with the block named `name` (its markers included) replaced by `block`."""
    begin, end = re.escape(f"<!-- {name}:begin ("), re.escape(f"<!-- {name}:end -->")
    pattern = re.compile(begin + r"[^)]*\) -->.*?" + end, re.S)
    if not pattern.search(text):
        raise ValueError(f"no <!-- {name}:begin ... --> ... <!-- {name}:end --> block to rewrite")
    return pattern.sub(lambda _: block, text)


def conditions(results: dict) -> str:
    """Where and under what load the figures were measured, as the results file records it."""
    machine = results.get("machine", {})
    cpu = machine.get("cpu_model") or "CPU model not recorded"
    where = f"{cpu}, {machine.get('cpus', '?')} cores, TensorFlow {results.get('tensorflow', '?')}"
    where += f", Keras {results['keras']}" if "keras" in results else ""
    load = results.get("machine_load")
    if load is None:
        state = "the machine's load was not recorded"
    elif load["quiet"]:
        start, end = load["start"]["load_average"][0], load["end"]["load_average"][0]
        averages = f"{start:.2f} at the start, {end:.2f} at the end"
        steal = "" if load.get("steal_percent") is None else f", {load['steal_percent']:.1f} % steal"
        state = f"a quiet machine (no other busy process; 1-minute load average {averages}{steal})"
    else:
        state = "a machine that was **not quiet** (" + "; ".join(load["not_quiet"]) + ")"
    return f"Measured by `{results['command']}` on {where}, on {state}."


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.0f}"


def _range(r: dict) -> str:
    return f"{r['ratio']:.2f}× ({r['min']:.2f}–{r['max']:.2f})"


def keras_distillation(results: dict) -> list[str]:
    names = {
        "logits": "logits: KD, T = 4, 0.1·CE + 0.9·T²·KL",
        "features": "features at the 3 points (iep `at`; Keras 3 × `FeatureDistillation(mse)`)",
    }
    lines = [
        "| pair | iep CPU ms/step | Keras CPU ms/step | Keras / iep, CPU time (range over rounds) | wall ms/step, "
        "iep / Keras |",
        "|---|---|---|---|---|",
    ]
    for row in results["results"]:
        lines.append(
            f"| {names[row['pair']]} | {_ms(row['iep_cpu_seconds_per_step']['median'])} "
            f"| {_ms(row['keras_cpu_seconds_per_step']['median'])} | {_range(row['keras_over_iep_cpu'])} "
            f"| {_ms(row['iep_wall_seconds_per_step']['median'])} / "
            f"{_ms(row['keras_wall_seconds_per_step']['median'])} |"
        )
    return lines


def iep_step_time(results: dict) -> list[str]:
    lines = [
        "| teacher → student (CPU s/step) | plain | plain + teacher forward | IEP | IEP+BB | IEP / plain "
        "| IEP / (plain + teacher) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["results"]:
        cpu = r["cpu_seconds_per_step"]
        lines.append(
            f"| {r['teacher'].upper()} → {r['student'].upper()} | {cpu['plain']['median']:.2f} s "
            f"| {cpu['plain+teacher']['median']:.2f} s | {cpu['iep']['median']:.2f} s "
            f"| {cpu['iep_bb']['median']:.2f} s "
            f"| {_range(r['iep_over_plain_cpu'])} | {_range(r['iep_over_plain_plus_teacher_cpu'])} |"
        )
    lines += ["", "The IEP step's pieces, each compiled and timed alone (CPU s per call):", ""]
    for r in results["results"]:
        pieces = ", ".join(
            f"{name.removeprefix('component: ')} {cpu['median']:.2f}"
            for name, cpu in r["cpu_seconds_per_step"].items()
            if name.startswith("component: ")
        )
        lines.append(f"- {r['teacher'].upper()} → {r['student'].upper()}: {pieces}.")
    return lines


def step_speed(results: dict) -> list[str]:
    synthetic = [r for r in results["results"] if r["input"] == "synthetic"]
    columns = list(dict.fromkeys((r["mode"], r["precision"]) for r in synthetic))
    short = {"float32": "f32", "mixed_bfloat16": "bf16", "mixed_float16": "f16"}
    header = " | ".join(f"{mode} {short.get(precision, precision)}" for mode, precision in columns)
    lines = [f"| step (CPU s/step) | {header} |", "|---|" + "---|" * len(columns)]
    cell = {(r["method"], r["mode"], r["precision"]): r["cpu_seconds_per_step"]["median"] for r in synthetic}
    for method in dict.fromkeys(r["method"] for r in synthetic):
        values = " | ".join(f"{cell[(method, m, p)]:.2f}" if (method, m, p) in cell else "—" for m, p in columns)
        lines.append(f"| {method} | {values} |")
    plain = {(m, p): seconds for (method, m, p), seconds in cell.items() if method == "plain"}
    ratios = [
        f"{r['method']} {m} {short.get(p, p)} {r['cpu_seconds_per_step']['median'] / plain[(m, p)]:.2f}×"
        for r in synthetic
        if r["method"] != "plain" and (m := r["mode"], p := r["precision"]) in plain
    ]
    if ratios:
        lines += ["", "Each step over the plain step of its mode and precision (CPU time): " + ", ".join(ratios) + "."]
    pipeline = {r["input"]: r for r in results["results"] if r["input"] != "synthetic"}
    if pipeline:
        alone, real, one = pipeline["pipeline_alone"], pipeline["real_data"], pipeline["in_memory"]
        lines += [
            "",
            f"The input pipeline alone delivers "
            f"{results['batch_size'] / alone['wall_seconds_per_step']['median']:,.0f} "
            f"images per wall second (decode, augment, batch from the TFRecords); a plain float32 step of the "
            f"student on CIFAR-10 fed by it takes {real['cpu_seconds_per_step']['median']:.2f} CPU s against "
            f"{one['cpu_seconds_per_step']['median']:.2f} on one in-memory batch.",
        ]
    return lines


def static_kd_step_speed(results: dict) -> list[str]:
    names = {
        "plain": "plain",
        "static_kd": "`static_kd` (no teacher)",
        "rkd": "`rkd` (teacher forward)",
        "iep": "`iep` phase 2 (teacher forward + SPCA/MPNN)",
    }
    rows = results["results"]
    plain = next(r for r in rows if r["method"] == "plain")["cpu_seconds_per_step"]["median"]
    lines = ["| step | CPU s/step | wall s/step | × plain (CPU) |", "|---|---|---|---|"]
    for r in rows:
        cpu = r["cpu_seconds_per_step"]["median"]
        lines.append(
            f"| {names.get(r['method'], r['method'])} | {cpu:.3f} | {r['wall_seconds_per_step']['median']:.3f} "
            f"| {cpu / plain:.2f} |"
        )
    return lines


def loop_throughput(results: dict) -> list[str]:
    lines = [
        "| network | our loop (img per CPU s) | `model.fit` (img per CPU s) | ours / fit, CPU time (range) "
        "| wall img/s, ours / fit |",
        "|---|---|---|---|---|",
    ]
    for r in results["results"]:
        lines.append(
            f"| {r['arch'].upper()} | {r['ours_images_per_cpu_second']['median']:.0f} "
            f"| {r['fit_images_per_cpu_second']['median']:.0f} | {_range(r['ours_over_fit_cpu'])} "
            f"| {r['ours_images_per_wall_second']['median']:.0f} / {r['fit_images_per_wall_second']['median']:.0f} |"
        )
    return lines


def run_overhead(results: dict) -> list[str]:
    lines = [
        "| `--eval_every` | wall | CPU | training epochs | evaluation (10,000 test images) | start-up and the rest "
        "| last accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["results"]:
        lines.append(
            f"| {r['eval_every']} | {r['wall_seconds']:.1f} s | {r['cpu_seconds']:.1f} s "
            f"| {r['train_seconds']:.1f} s | {r['eval_seconds']:.1f} s ({r['evaluations']}×) "
            f"| {r['other_seconds']:.1f} s | {r['last_accuracy']:.4f} |"
        )
    return lines


def export_formats(results: dict) -> list[str]:
    lines = [
        f"{results['arch']} from `{results['run_dir']}`, {results['test_images']:,} test images of "
        f"{results['dataset']}, one thread.",
        "",
        "| format | size (KiB) | top-1 % | agrees with SavedModel % | max logit diff | one image, CPU ms | "
        "one image, wall ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["results"]:
        lines.append(
            f"| {r['format']} | {r['bytes'] / 1024:.0f} | {100 * r['top1']:.2f} | "
            f"{100 * r['agreement_with_savedmodel']:.2f} | {r['max_abs_logit_difference']:.4f} | "
            f"{r['cpu_ms_one_image']['median']:.2f} | {r['wall_ms_one_image']['median']:.2f} |"
        )
    return lines


def ivis_speed(results: dict) -> list[str]:
    fits = results["results"]
    each = "; ".join(
        f"seed {r['seed']}: {r['fit_wall_seconds']:.1f} s wall, {r['fit_cpu_seconds']:.1f} CPU s, "
        f"{r['epochs']} epochs, "
        f"held-out 5-NN accuracy {r['held_out_knn_accuracy']:.3f}"
        for r in fits
    )
    return [
        f"{results['points']:,} × {results['dims']} points (10 Gaussian blobs), the whole fit (exact kNN, then "
        f"training with early stop) and the transform of {results['held_out']:,} held-out points: {each}."
    ]


# name → (results file, renderer, the doc that holds it)
def mean_spread(mean: float, std: float, seeds: int) -> str:
    """Mean ± spread over seeds in %; one seed has no spread, so none is printed (not "± 0.00"). Also the
    results charts' and the protocol study's tables."""
    return f"{100 * mean:.2f}" if seeds < 2 else f"{100 * mean:.2f} ± {100 * std:.2f}"


def static_kd_accuracy(results: dict) -> list[str]:
    """Static KD beside the vanilla student and every method of the same short protocol, best first."""
    rows = sorted(results["results"], key=lambda r: -r["last_mean"])
    by_method = {r["method"]: r for r in rows}
    teacher = results["teacher"]
    lines = [
        f"| student | seeds | top-1 % (test; {teacher['arch']} teacher at {100 * teacher['last_accuracy']:.2f}) "
        "| − vanilla |",
        "|---|---|---|---|",
    ]
    for r in rows:
        name = "vanilla" if r["method"] == "none" else f"`{r['method']}`"
        gain = "—" if r["method"] == "none" else f"{100 * r['gain_over_vanilla']:+.2f}"
        accuracy = mean_spread(r["last_mean"], r["last_std"], r["seeds"])
        bold = r["method"] == "static_kd"
        lines.append(f"| {name} | {r['seeds']} | {f'**{accuracy}**' if bold else accuracy} | {gain} |")
    static, vanilla = by_method["static_kd"], by_method["none"]
    below = [m for m, r in by_method.items() if r["last_mean"] < static["last_mean"] and m != "none"]
    lines += [
        "",
        f"`static_kd` ends {100 * abs(static['gain_over_vanilla']):.2f} points "
        f"{'above' if static['last_mean'] > vanilla['last_mean'] else 'below'} the vanilla student; of the "
        f"{len(rows) - 2} other methods it is ahead of {len(below)} ({', '.join(sorted(below)) or 'none'}).",
    ]
    return lines


EMBEDDING_SPACES = (("features", "features"), ("tsne", "t-SNE"), ("ivis", "IVIS"))


def embedding_study(results: dict) -> list[str]:
    """5-NN accuracy of every network's test embeddings, per space and sensing point (the teacher first)."""
    rows = [r for r in results["results"] if r["metric"] == "knn_accuracy"]
    points = sorted({r["point"] for r in rows})
    accuracy = {r["network"]: r["test_accuracy"] for r in rows}
    value = {(r["network"], r["space"], r["point"]): r["value"] for r in rows}
    networks = sorted(accuracy, key=lambda n: (n != "teacher", -accuracy[n]))
    short = " / ".join(f"p{p.removeprefix('point')}" for p in points)
    lines = [
        "| network (test %) | " + " | ".join(f"{title} {short}" for _, title in EMBEDDING_SPACES) + " |",
        "|---|" + "---|" * len(EMBEDDING_SPACES),
    ]
    for network in networks:
        cells = [" / ".join(f"{value[network, space, p]:.3f}" for p in points) for space, _ in EMBEDDING_SPACES]
        label = "vanilla" if network == "none" else network
        lines.append(f"| {label} ({100 * accuracy[network]:.2f}) | " + " | ".join(cells) + " |")
    return lines


BLOCKS: dict[str, tuple[str, Callable[[dict], list[str]], str]] = {
    "keras-distillation": ("keras_distillation.json", keras_distillation, "benchmarks.md"),
    "iep-step-time": ("iep_step_time.json", iep_step_time, "benchmarks.md"),
    "step-speed": ("step_speed.json", step_speed, "benchmarks.md"),
    "static-kd-step-speed": ("static_kd_step_speed.json", static_kd_step_speed, "methods.md"),
    "loop-throughput": ("loop_throughput.json", loop_throughput, "benchmarks.md"),
    "run-overhead": ("run_overhead.json", run_overhead, "benchmarks.md"),
    "export-formats": ("export_formats.json", export_formats, "benchmarks.md"),
    "ivis-speed": ("ivis_speed.json", ivis_speed, "interpretability.md"),
    "static-kd-accuracy": ("reproduce_small_static.json", static_kd_accuracy, "methods.md"),
    "embedding-study": ("embedding_study.json", embedding_study, "interpretability.md"),
}
# Accuracy, not time: the machine's load cannot change them, so their blocks say where they come from instead.
ACCURACY_BLOCKS = ("static-kd-accuracy", "embedding-study")
SCRIPTS = {  # the script that writes each results file (named in the block's marker)
    "static-kd-step-speed": "benchmarks/step_speed.py",
    "static-kd-accuracy": "benchmarks/reproduce_small.py",
}


def provenance(results: dict, filename: str) -> str:
    """Which command wrote an accuracy table, into which file, on what machine."""
    machine = results.get("machine", {})
    cpu = machine.get("cpu_model") or "a CPU whose model was not recorded"
    return (
        f"From `{results['command']}` (`benchmarks/results/{filename}`), on {cpu}, {machine.get('cpus', '?')} "
        f"cores, TensorFlow {results.get('tensorflow', '?')}."
    )


def render(name: str, results: dict | None = None) -> str:
    """The block `name` as its doc should hold it, from `results` (default: its committed results file)."""
    filename, renderer, _ = BLOCKS[name]
    if results is None:
        with open(os.path.join(RESULTS_DIR, filename)) as f:
            results = json.load(f)
    script = SCRIPTS.get(name, f"benchmarks/{filename.removesuffix('.json')}.py")
    begin, end = markers(name, script)
    footer = provenance(results, filename) if name in ACCURACY_BLOCKS else conditions(results)
    return "\n".join([begin, *renderer(results), "", footer, end])


def doc_path(name: str) -> str:
    return os.path.join(DOCS, BLOCKS[name][2])


def update(name: str) -> None:
    """Rewrites block `name` in its doc from its results file."""
    path = doc_path(name)
    with open(path) as f:
        text = rewrite(f.read(), name, render(name))  # fails before the page is touched
    with open(path, "w") as f:
        f.write(text)
    print(f"wrote {name} into {os.path.relpath(path, ROOT)}")


def update_for(results_path: str) -> None:
    """Rewrites the block a results file feeds, if the docs cite that file (a run written elsewhere, e.g. a tiny
    test's, feeds none). Every timing benchmark calls this after writing its results."""
    path = os.path.abspath(results_path)
    for name, (filename, _, _) in BLOCKS.items():
        if path == os.path.join(RESULTS_DIR, filename):
            update(name)


def main() -> None:
    for name in BLOCKS:
        update(name)


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    main()
