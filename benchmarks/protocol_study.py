"""Why IEP ranks below FitNet and CO at CPU scale: the scaled-down protocol changed one factor at a time.

  python benchmarks/protocol_study.py                                  # every factor, resumable (many hours)
  python benchmarks/protocol_study.py --factors=baseline,module_20_epochs --methods=none,iep,iep_bb
  python benchmarks/protocol_study.py --factors=combined --combine=auto # after the single factors
  python benchmarks/protocol_study.py --report_only
  python benchmarks/protocol_study.py --quick                          # plumbing only (minutes)

Base: reproduce_small's CPU protocol (WRN-28-1 teacher for 10 epochs, WRN-16-1 students on 10 % of the
shared CIFAR-10, 15 epochs, dropout 0, IEP's and MHGD's modules 200 steps) for vanilla, IEP, IEP+BB, FitNet
and CO, seeds 0 and 1. Every student holds out a stratified 10 % of the training split as `validation`
(`--validation_fraction`, fixed seed, before the 10 % subset is drawn) and is evaluated on it every 5 epochs;
the test split is evaluated once, after the run. Factor selection for `combined --combine=auto` reads only
validation accuracy, never test.

Factors (the suspects named in the study's issue), each alone against the baseline:
  module_20_epochs  IEP/IEP+BB module phase of 20 passes over the student's data (the code's 20 epochs; 700 steps
                    here: the 4,500 images that 10 % of the 45,000 left after the validation holdout is)
  dropout_0.3       student dropout 0.3 (the paper's), teacher unchanged
  wide_teacher      a WRN-16-4 teacher (trained as the base one), so IEP compresses 32/64/128 PCs, and feature
                    regression needs a width change (the heterogeneous setting of the paper's Table 3)
  epochs_30         30 student epochs instead of 15
  combined          the factors that raised both IEP and IEP+BB on validation (--combine=auto) or a given list
Per run the report also gives the mean clip ratio of IEP's distillation gradient (`distill/clip_ratio`) and
the last logged phase-1 module loss (`pre_phase/module_kld`).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # noqa: E402 (benchmarks.*)

from absl import app, flags  # noqa: E402

from benchmarks import reproduce_small as small  # noqa: E402
from iep.engine.files import read_json, write_json_atomic  # noqa: E402

FLAGS = flags.FLAGS
METHODS = ("none", "iep", "iep_bb", "fitnet", "co")
VALIDATION_FRACTION = 0.1
EVAL_EVERY = 5
MODULE_EPOCHS = 20


@dataclasses.dataclass(frozen=True)
class Factor:
    module_epochs: int | None = None  # IEP/IEP+BB module phase in passes over the student's data
    dropout: float = 0.0
    teacher_arch: str | None = None
    epochs: int | None = None


FACTORS = {
    "baseline": Factor(),
    "module_20_epochs": Factor(module_epochs=MODULE_EPOCHS),
    "dropout_0.3": Factor(dropout=0.3),
    "wide_teacher": Factor(teacher_arch="wrn-16-4"),
    "epochs_30": Factor(epochs=30),
}


def _define_flags() -> None:
    flags.DEFINE_string("data_dir", small.DEFAULT_DATA_DIR, "CIFAR-10 TFRecords (see ../shared/data/README).")
    flags.DEFINE_string("root", None, "Where the runs go; default runs/protocol_study[_quick].")
    flags.DEFINE_list("factors", [*FACTORS, "combined"], f"Factors to run: {[*FACTORS, 'combined']}.")
    flags.DEFINE_list("methods", list(METHODS), "Methods ('none' is the vanilla student).")
    flags.DEFINE_integer("seeds", 2, "Seeds per factor and method.")
    flags.DEFINE_list("combine", ["auto"], "Factors of `combined`: auto (those that raised IEP and IEP+BB) or names.")
    flags.DEFINE_boolean("quick", False, "Tiny protocol that only checks the plumbing.")
    flags.DEFINE_boolean("report_only", False, "Only aggregate finished runs.")


def combined_factor(names: list[str]) -> Factor:
    out = Factor()
    for name in names:
        out = dataclasses.replace(out, **{k: v for k, v in dataclasses.asdict(FACTORS[name]).items() if v})
    return out


def teacher_dir(root: str, factor: Factor, p: small.Protocol) -> str:
    arch = factor.teacher_arch or p.teacher_arch
    return os.path.join(root, "teacher" if arch == p.teacher_arch else f"teacher_{arch}")


def student_run(p: small.Protocol, root: str, factor_name: str, factor: Factor, method: str, seed: int):
    """(train.py command, run dir) of one student of one factor: reproduce_small's command, changed."""
    steps_per_epoch = round(50_000 * (1 - VALIDATION_FRACTION) * min(p.rates)) // 128
    protocol = dataclasses.replace(p, student_epochs=factor.epochs or p.student_epochs)
    base = os.path.join(root, factor_name)
    command = small.student_command(protocol, base, FLAGS.data_dir, method, min(p.rates), seed)
    command = [c for c in command if not c.startswith(("--dropout=", "--teacher="))]
    command += [f"--dropout={factor.dropout:g}", f"--validation_fraction={VALIDATION_FRACTION}"]
    command += ["--eval_split=validation", f"--eval_every={EVAL_EVERY}"]
    if method != "none":
        command.append(f"--teacher={teacher_dir(root, factor, p)}")
    if factor.module_epochs and method.startswith("iep"):
        command = [c for c in command if not c.startswith("--iep_module_steps=")]
        command.append(f"--iep_module_steps={factor.module_epochs * steps_per_epoch}")
    return command, small.student_dir(base, method, min(p.rates), seed)


def _last_scalar(run_dir: str, tag: str) -> float | None:
    import tensorflow as tf

    values = []
    for path in sorted(glob.glob(os.path.join(run_dir, "tensorboard", "events.out.tfevents.*"))):
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            event = tf.compat.v1.Event.FromString(record)
            values += [(event.step, float(tf.make_ndarray(v.tensor))) for v in event.summary.value if v.tag == tag]
    return max(values)[1] if values else None


def test_accuracy(run_dir: str) -> float:
    """The test split, once, after the run (cached beside it)."""
    path = os.path.join(run_dir, "study_test.json")
    if not os.path.exists(path):
        from iep.engine.evaluation import evaluate

        write_json_atomic(path, {"top1": evaluate(run_dir=run_dir, split="test")["top1"]})
    return read_json(path)["top1"]


def summarize(p: small.Protocol, root: str, factor_names: list[str]) -> list[dict]:
    rows = []
    for name in factor_names:
        factor = FACTORS.get(name) or combined_factor(read_json(os.path.join(root, "combined.json"))["factors"])
        for method in METHODS:
            done = []
            for seed in range(FLAGS.seeds):
                _, run_dir = student_run(p, root, name, factor, method, seed)
                if metrics := small.finished_metrics(run_dir):
                    done.append((run_dir, metrics))
            if not done:
                continue
            clip = [h.get("distill/clip_ratio") for _, m in done for h in m["history"] if "distill/clip_ratio" in h]
            plateau = [_last_scalar(r, "pre_phase/module_kld") for r, _ in done if method.startswith("iep")]
            rows.append(
                {
                    "factor": name,
                    "method": method,
                    "seeds": len(done),
                    "validation": statistics.mean(m["last_accuracy"] for _, m in done),
                    "test": statistics.mean(test_accuracy(r) for r, _ in done),
                    "test_per_seed": [test_accuracy(r) for r, _ in done],
                    "clip_ratio": statistics.mean(clip) if clip else None,
                    "module_kld_last": statistics.mean(plateau) if plateau and None not in plateau else None,
                    "train_seconds": statistics.mean(sum(h["seconds"] for h in m["history"]) for _, m in done),
                }
            )
    base = {r["method"]: r for r in rows if r["factor"] == "baseline"}
    for row in rows:
        ref = base.get(row["method"])
        row["validation_gain"] = row["validation"] - ref["validation"] if ref else None
        row["test_gain"] = row["test"] - ref["test"] if ref else None
    return rows


def auto_combination(rows: list[dict]) -> list[str]:
    """The single factors whose validation gain was positive for both IEP and IEP+BB."""
    gains = {(r["factor"], r["method"]): r["validation_gain"] for r in rows}
    return [f for f in FACTORS if f != "baseline" and all((gains.get((f, m)) or 0) > 0 for m in ("iep", "iep_bb"))]


def markdown(rows: list[dict]) -> str:
    lines = [
        "| factor | method | seeds | val | gain (val) | test | gain (test) | clip ratio | module KLD | epochs s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def pct(x, signed=False):
        return "—" if x is None else (f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}")

    for r in rows:
        clip = "—" if r["clip_ratio"] is None else f"{r['clip_ratio']:.3f}"
        kld = "—" if r["module_kld_last"] is None else f"{r['module_kld_last']:.2f}"
        lines.append(
            f"| {r['factor']} | {r['method']} | {r['seeds']} | {pct(r['validation'])} | "
            f"{pct(r['validation_gain'], True)} | {pct(r['test'])} | {pct(r['test_gain'], True)} | {clip} | {kld} "
            f"| {r['train_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    unknown = sorted(set(FLAGS.factors) - {*FACTORS, "combined"}) + sorted(set(FLAGS.methods) - set(METHODS))
    if unknown:
        raise app.UsageError(f"unknown --factors/--methods {unknown}; factors {[*FACTORS, 'combined']}, {METHODS}")
    p = small.QUICK if FLAGS.quick else small.FULL
    root = FLAGS.root or os.path.join("runs", "protocol_study_quick" if FLAGS.quick else "protocol_study")
    os.makedirs(root, exist_ok=True)
    wall_times = os.path.join(root, "wall_times.json")
    names = [f for f in FLAGS.factors if f != "combined"]
    if not FLAGS.report_only:
        for name in names:
            factor = FACTORS[name]
            teacher = teacher_dir(root, factor, p)
            arch_protocol = dataclasses.replace(p, teacher_arch=factor.teacher_arch or p.teacher_arch)
            command = small.teacher_command(arch_protocol, root, FLAGS.data_dir)
            command = [c for c in command if not c.startswith("--run_dir=")] + [f"--run_dir={teacher}"]
            small.run_job(command, teacher, wall_times)
            for seed in range(FLAGS.seeds):
                for method in FLAGS.methods:
                    if name == "module_20_epochs" and not method.startswith("iep"):
                        continue  # the factor changes nothing else: those rows are the baseline's
                    small.run_job(*student_run(p, root, name, factor, method, seed), wall_times)
        if "combined" in FLAGS.factors:
            chosen = auto_combination(summarize(p, root, list(FACTORS))) if FLAGS.combine == ["auto"] else FLAGS.combine
            if not chosen:
                print("combined: no single factor raised both IEP and IEP+BB on validation; nothing to combine")
            else:
                write_json_atomic(os.path.join(root, "combined.json"), {"factors": chosen})
                factor = combined_factor(chosen)
                for seed in range(FLAGS.seeds):
                    for method in FLAGS.methods:
                        small.run_job(*student_run(p, root, "combined", factor, method, seed), wall_times)
    has_combined = os.path.exists(os.path.join(root, "combined.json"))
    rows = summarize(p, root, [*FACTORS, *(["combined"] if has_combined else [])])
    name = "protocol_study_quick" if FLAGS.quick else "protocol_study"
    times = read_json(wall_times) if os.path.exists(wall_times) else {}
    result = {"protocol": dataclasses.asdict(p), "wall_seconds_total": sum(times.values()), "rows": rows}
    os.makedirs(small.RESULTS_DIR, exist_ok=True)
    write_json_atomic(os.path.join(small.RESULTS_DIR, f"{name}.json"), result)
    table = markdown(rows)
    with open(os.path.join(small.RESULTS_DIR, f"{name}.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
