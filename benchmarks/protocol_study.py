"""Why IEP ranks below FitNet and CO at CPU scale: the scaled-down protocol changed one factor at a time.

  python benchmarks/protocol_study.py --factors=baseline,module_20_epochs,dropout_0.3,wide_teacher,epochs_30,no_clip
  python benchmarks/protocol_study.py --factors=combined --combine=auto # after the single factors
  python benchmarks/protocol_study.py                                  # all of the above in one go (many hours)
  python benchmarks/protocol_study.py --report_only
  python benchmarks/protocol_study.py --factors=paper_schedule --results_name=paper_schedule  # 100 epochs
  python benchmarks/protocol_study.py --factors=paper_schedule --results_name=paper_schedule --methods=all \
      --parallel=2                                                     # the table: every method, 100 epochs
  python benchmarks/protocol_study.py --factors=rate_0.01,rate_0.025,rate_0.05,rate_0.01_main_steps,\
      rate_0.01_pre_phase_steps --results_name=scarce_data --parallel=2 \
      --methods=none,iep_bb,iep,co,rkd,at,ft,ab,mhgd,fitnet,dkd,iep_termclip,iep_bb_termclip  # scarce data
  python benchmarks/protocol_study.py --quick                          # plumbing only (minutes)

Base: reproduce_small's CPU protocol (WRN-28-1 teacher for 10 epochs, WRN-16-1 students on 10 % of the
shared CIFAR-10, 15 epochs, dropout 0, IEP's modules 200 steps) for vanilla, IEP, IEP+BB, FitNet and CO,
seeds 0 and 1. A stratified 10 % of the training split is held out as `validation` (`--validation_fraction`,
fixed seed, before the 10 % subset is drawn) from every student *and* every teacher; students are evaluated
on it every 5 epochs, and on the test split once, after the run. Selection (`combined --combine=auto`) reads
validation accuracy only, never test.

Factors (the suspects named in the study's issue), each alone against the baseline; a factor that cannot
change a method (the module phase for FitNet, the teacher for the vanilla student) reuses the baseline run,
and a combination reuses a single factor's run where only that factor reaches the method:
  module_20_epochs  IEP/IEP+BB module phase of 20 passes over the student's data (`--iep_module_epochs=20`, the
                    code's 20 epochs; 700 steps on CIFAR-10's 4,500 images left by the holdout and the 10 % subset)
  dropout_0.3       student dropout 0.3 (the paper's), teacher unchanged
  wide_teacher      a WRN-16-4 teacher (trained as the base one), so IEP compresses 32/64/128 PCs, and feature
                    regression needs a width change (the heterogeneous setting of the paper's Table 3)
  epochs_30         30 student epochs instead of 15
  no_clip           diagnostic, not a protocol setting: IEP's distillation gradient added uncapped (--noiep_clip);
                    never combined
  paper_schedule    the paper's budget: 100 student epochs (LR x0.2 at 30/60/80 %) with the module phase of
                    module_20_epochs; never combined
  combined          the protocol factors that raised both IEP and IEP+BB on validation (--combine=auto) or a list

The comparison table (`--methods=all`, meant for `paper_schedule`): every built-in method with a teacher
network, each with its module phase as its reference counts it (IEP 20 passes, MHGD its 40), plus IEP and
IEP+BB with each distillation term clipped on its own (`iep_termclip`, `iep_bb_termclip`), and KD with logit
standardization (`lskd`), and MLKD at its authors' LR 0.025 and batch 64 (`mlkd_authors_lr`).

The scarce-data study (the paper's Table 1 in images per class): the paper-budget protocol at rates 0.01, 0.025
and 0.05 (45 / 112 / 225 images per class; 3, 3 and 2 seeds), then two step-matched controls at 0.01, one seed
each: `rate_0.01_main_steps` (the 10 % run's main steps, 1,167 epochs; vanilla, CO, DKD, IEP+BB with both clips)
and `rate_0.01_pre_phase_steps` (every pre-phase as many steps as at 10 %). Each run records its last epoch's
training cross-entropy and its pre-phases' steps (metrics.json) and final losses.

The methods published since 2021 at the short budget (the `baseline` factor, beside vanilla and KD):
  python benchmarks/protocol_study.py --factors=baseline --results_name=short_budget_since_2021 --parallel=2 \
      --methods=none,kd,dist,lskd,pkt,sp,nst,cc,vid,crd,reviewkd,mlkd,mlkd_authors_lr
Per run the report gives the mean clip ratio of IEP's distillation gradient (`distill/clip_ratio`), the phase-1
loss at its last TensorBoard write (IEP's `pre_phase/module_kld`, FitNet's `pre_phase/hint`), and where the
wall time went; per factor, how far IEP and IEP+BB are from the better of FitNet and CO. It ends with the runs of
--methods still to train, in the order the study trains them, and where each stands (its newest checkpoint).
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
import statistics
import sys
from collections.abc import Iterator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # noqa: E402 (benchmarks.*)

from absl import app, flags  # noqa: E402

from benchmarks import reproduce_small as small  # noqa: E402
from benchmarks.plot_results import mean_spread  # noqa: E402
from benchmarks.recorded import (  # noqa: E402
    Recorded,
    define_rerun_flag,
    finished,
    finished_metrics,
    run_state,
    teacher_differences,
    teachers_sentence,
)
from benchmarks.results_io import cpu_model  # noqa: E402
from iep.core.files import read_json, write_json_atomic  # noqa: E402
from iep.methods import METHODS as BUILT_IN  # noqa: E402
from iep.methods import PRE_PHASE, STATIC_METHODS, default_pre_phase_steps  # noqa: E402

FLAGS = flags.FLAGS
METHODS = ("none", "iep", "iep_bb", "fitnet", "co")  # the factor study's methods (its question: IEP's gap)
# Variants: a study method name → (--distill, extra train.py flags). IEP with each distillation term's gradient
# clipped on its own (IEPKT adds three 'dist' entries; its optimizer is unpublished: docs/methods.md); KD with
# logit standardization at the LSKD authors' setting (`iep/baselines/logit_kd.py`, `setting=lskd`).
VARIANTS = {
    "iep_termclip": ("iep", ["--distill_args=clip_terms=per_term"]),
    "iep_bb_termclip": ("iep_bb", ["--distill_args=clip_terms=per_term"]),
    "lskd": ("kd", ["--distill_args=setting=lskd"]),
    # MLKD at its authors' step size and batch (KD_ours on CIFAR-100: LR 0.025, batch 64): its class-level term
    # grows as batch²/classes, and at the protocol's LR 0.1, batch 128 on 10 classes the student never learns.
    "mlkd_authors_lr": ("mlkd", ["--lr=0.025", "--batch_size=64"]),
    # Fidelity pass 3 (docs/methods.md): the vanilla student that decays every variable, as the RepDistiller
    # family, mdistiller, ReviewKD and the CIFAR DIST do (their gains are measured against it); KD as the field
    # knows it (Hinton's T², mdistiller's setting); DIST's ImageNet recipe (the rows before its CIFAR one became
    # the default); ReviewKD with the teacher's BN on batch statistics, as the authors' train.py runs it.
    "none_decay_all": ("none", ["--distill_args=decay=every_variable"]),
    "kd_mdistiller": ("kd", ["--distill_args=setting=mdistiller"]),
    "dist_imagenet": ("dist", ["--distill_args=setting=imagenet"]),
    "reviewkd_authors": ("reviewkd", ["--distill_args=teacher_mode=train"]),
}
# Rows a results file keeps whose code no longer exists: reported from their records, never trained again.
RETIRED = {
    "vid_shared_init": "VID before its three regressor convs drew their initial weights apart (fixed 2026-12-06)",
}
# The study methods whose weight decay reaches conv and dense kernels only (IEPKT's arg scopes, the plain
# student, DIST's ImageNet recipe); every other method decays every variable, as its reference's optimizer does,
# and is measured against the vanilla student that does too. tests/test_protocol_study.py checks this list
# against every method's distiller.
DECAY_KERNELS_ONLY = ("none", "iep", "iep_bb", "iep_termclip", "iep_bb_termclip", "dist_imagenet")
VANILLA, VANILLA_DECAY_ALL = "none", "none_decay_all"
# The comparison table at the paper's budget: every built-in method that learns from a teacher network (static
# knowledge has none), then the variants. `--methods=all` names them.
TABLE_METHODS = (*(m for m in BUILT_IN if m not in STATIC_METHODS), *VARIANTS)
# The `--distill` methods whose module phase the short protocol shortens (IEP's 200 steps, MHGD's
# `pre_phase_steps`); a factor with `module_epochs` gives them their reference length (IEP: that many passes;
# MHGD: its own 40). A study method is tested by its `--distill` (`variant_of`), so IEP's variants count as IEP
# and KD's (lskd) as KD.
IEP_METHODS = ("iep", "iep_bb")
MODULE_PHASE_METHODS = (*IEP_METHODS, "mhgd")
VALIDATION_FRACTION = 0.1
EVAL_EVERY = 5
MODULE_EPOCHS = 20


@dataclasses.dataclass(frozen=True)
class Factor:
    module_epochs: int | None = None  # IEP/IEP+BB module phase in passes over the student's data
    dropout: float = 0.0
    teacher_arch: str | None = None
    epochs: int | None = None
    clip: bool = True  # False: IEP's distillation gradient uncapped (--noiep_clip), a diagnostic of the method
    rate: float | None = None  # the students' share of the training split; None: the protocol's (10 %)
    # Controls of the scarce-data study: the main phase, or every pre-phase, as many steps as at this rate (the
    # paper-budget table's 10 %), so that data scarcity is told apart from step scarcity.
    main_steps_of_rate: float | None = None
    pre_phase_steps_of_rate: float | None = None
    seeds: int | None = None  # seeds per method; None: the study's --seeds
    methods: tuple[str, ...] | None = None  # the methods the factor trains; None: every method asked for

    def seen_by(self, method: str) -> Factor:
        """The part of this factor `method`'s run sees: only IEP (and MHGD) have the module phase, only IEP the
        clip, the vanilla student no teacher."""
        distill = variant_of(method)[0]
        return dataclasses.replace(
            self,
            module_epochs=self.module_epochs if distill in MODULE_PHASE_METHODS else None,
            clip=self.clip if distill in IEP_METHODS else True,
            teacher_arch=self.teacher_arch if distill != "none" else None,
            pre_phase_steps_of_rate=self.pre_phase_steps_of_rate if distill in PRE_PHASE else None,
            seeds=None,  # how often and for whom a factor runs is not part of a run
            methods=None,
        )

    def trains(self, method: str) -> bool:
        return self.methods is None or method in self.methods


FACTORS = {
    "baseline": Factor(),
    "module_20_epochs": Factor(module_epochs=MODULE_EPOCHS),
    "dropout_0.3": Factor(dropout=0.3),
    "wide_teacher": Factor(teacher_arch="wrn-16-4"),
    "epochs_30": Factor(epochs=30),
    "no_clip": Factor(clip=False),
    # The paper's own budget (100 epochs, LR x0.2 at 30/60/80 %, the module phase the code's 20 epochs).
    "paper_schedule": Factor(epochs=100, module_epochs=MODULE_EPOCHS),
    # The paper's Table 1 in images per class (scarce_data): CIFAR-10 at 225 / 112 / 45 images per class, the
    # paper's CIFAR-100 0.5 / 0.25 / 0.1 columns, at the paper's budget; more seeds where runs are short and noisy.
    **{
        f"rate_{rate:g}": Factor(epochs=100, module_epochs=MODULE_EPOCHS, rate=rate, seeds=seeds)
        for rate, seeds in ((0.05, 2), (0.025, 3), (0.01, 3))
    },
    # Step-matched controls at 45 images per class, one seed: the 10 % run's main steps (about 1,170 epochs), or
    # its pre-phase steps (each module trained as long as at 10 %).
    "rate_0.01_main_steps": Factor(
        epochs=100, module_epochs=MODULE_EPOCHS, rate=0.01, main_steps_of_rate=0.1, seeds=1,
        methods=("none", "co", "dkd", "iep_bb", "iep_bb_termclip"),  # vanilla, the paper's runner-up, DKD, IEP+BB
    ),
    "rate_0.01_pre_phase_steps": Factor(
        epochs=100, module_epochs=MODULE_EPOCHS, rate=0.01, pre_phase_steps_of_rate=0.1, seeds=1
    ),
}  # fmt: skip
SCARCE_DATA_FACTORS = ("rate_0.01", "rate_0.025", "rate_0.05", "rate_0.01_main_steps", "rate_0.01_pre_phase_steps")
# The paper's Table-1 columns, IEP and IEP+BB with the per-term clip, DKD and FitNet: the scarce-data methods.
SCARCE_DATA_METHODS = (
    "none", "iep_bb", "iep", "co", "rkd", "at", "ft", "ab", "mhgd", "fitnet", "dkd", "iep_termclip", "iep_bb_termclip",
)  # fmt: skip
# CIFAR-10's training split per class after the validation holdout, and the study's batch: what a rate's steps
# per epoch follow from (`datasets.sampling.stratified_indices` keeps round(rate·n) of each class).
CIFAR10_TRAIN_PER_CLASS, CIFAR10_CLASSES, BATCH_SIZE = 4500, 10, 128


def steps_per_epoch(rate: float) -> int:
    return CIFAR10_CLASSES * max(1, round(rate * CIFAR10_TRAIN_PER_CLASS)) // BATCH_SIZE


# Factors that change a method rather than the protocol: measured to explain, never combined; and the
# paper's schedule, a destination rather than a suspect.
DIAGNOSTICS = ("no_clip",)
NOT_COMBINED = (*DIAGNOSTICS, "paper_schedule", *SCARCE_DATA_FACTORS)


def _define_flags() -> None:
    flags.DEFINE_string("data_dir", small.DEFAULT_DATA_DIR, "CIFAR-10 TFRecords (see ../shared/data/README).")
    flags.DEFINE_string("root", None, "Where the runs go; default runs/protocol_study[_quick].")
    flags.DEFINE_list("factors", [*FACTORS, "combined"], f"Factors to run: {[*FACTORS, 'combined']}.")
    flags.DEFINE_list(
        "methods",
        list(METHODS),
        f"Methods ('none' is the vanilla student; 'all': {', '.join(TABLE_METHODS)}).",
    )
    flags.DEFINE_integer(
        "parallel", 1, "Student runs at a time, each on cores/parallel threads, output in <run_dir>.log."
    )
    flags.DEFINE_integer("seeds", 2, "Seeds per factor and method.")
    flags.DEFINE_list("combine", ["auto"], "Factors of `combined`: auto (those that raised IEP and IEP+BB) or names.")
    flags.DEFINE_boolean("quick", False, "Tiny protocol that only checks the plumbing.")
    flags.DEFINE_boolean("report_only", False, "Only aggregate finished runs.")
    define_rerun_flag(flags)
    flags.DEFINE_string(
        "results_name",
        None,
        "benchmarks/results/<name>.{json,md}; default protocol_study[_quick]. The paper schedule writes its own "
        "(paper_schedule): its runs use the baselines as fixed after the single-factor study was measured.",
    )


def combined_factor(names: list[str]) -> Factor:
    out = Factor()
    for name in names:
        changed = {k: v for k, v in dataclasses.asdict(FACTORS[name]).items() if v != getattr(Factor(), k)}
        out = dataclasses.replace(out, **changed)
    return out


@dataclasses.dataclass(frozen=True)
class Study:
    """Where one study's runs live, what they read, and how many seeds each cell has."""

    protocol: small.Protocol
    root: str
    data_dir: str = small.DEFAULT_DATA_DIR
    seeds: int = 2


def run_source(name: str, factor: Factor, method: str) -> str:
    """The factor whose run `method` uses under `name`: the first single factor its run would be identical to
    (the baseline where `name` cannot change the method; `epochs_30` for FitNet under module_20_epochs +
    epochs_30), else `name` itself. Identical runs are run once."""
    seen = factor.seen_by(method)
    return next((n for n, f in FACTORS.items() if f.seen_by(method) == seen), name)


def teacher_dir(study: Study, factor: Factor) -> str:
    p = study.protocol
    arch = factor.teacher_arch or p.teacher_arch
    return os.path.join(study.root, "teacher" if arch == p.teacher_arch else f"teacher_{arch}")


def teacher_run(study: Study, factor: Factor) -> tuple[list[str], str]:
    """(train.py command, run dir) of the factor's teacher: reproduce_small's, on the students' training split."""
    p = study.protocol
    run_dir = teacher_dir(study, factor)
    arch_protocol = dataclasses.replace(p, teacher_arch=factor.teacher_arch or p.teacher_arch)
    command = small.teacher_command(arch_protocol, study.root, study.data_dir)
    command = [c for c in command if not c.startswith("--run_dir=")] + [f"--run_dir={run_dir}"]
    # The students' validation images are held out from the teacher too, so selection never sees an image
    # that shaped any network of the run (the teacher still reports test accuracy; it is not selected).
    command += [f"--validation_fraction={VALIDATION_FRACTION}", f"--eval_every={EVAL_EVERY}"]
    return command, run_dir


def student_run(study: Study, factor_name: str, factor: Factor, method: str, seed: int) -> tuple[list[str], str]:
    """(train.py command, run dir) of one student of one factor: reproduce_small's command, changed."""
    p = study.protocol
    rate = factor.rate or min(p.rates)
    epochs = factor.epochs or p.student_epochs
    if factor.main_steps_of_rate:  # as many main steps as at that rate: more epochs over the smaller data
        epochs = math.ceil(epochs * steps_per_epoch(factor.main_steps_of_rate) / steps_per_epoch(rate))
    protocol = dataclasses.replace(p, student_epochs=epochs)
    base = os.path.join(study.root, factor_name)
    distill, extra = variant_of(method)
    run_dir = small.student_dir(base, method, rate, seed)
    command = small.student_command(protocol, base, study.data_dir, distill, rate, seed)
    command = [c for c in command if not c.startswith(("--dropout=", "--teacher=", "--run_dir="))]
    command += [f"--run_dir={run_dir}", *extra]
    command += [f"--dropout={factor.dropout:g}", f"--validation_fraction={VALIDATION_FRACTION}"]
    # about 20 evaluations a run at most (the step-matched control's 1,167 epochs would spend hours evaluating)
    command += ["--eval_split=validation", f"--eval_every={max(EVAL_EVERY, epochs // 20)}"]
    if distill != "none":  # the vanilla students (either decay rule) have no teacher
        command.append(f"--teacher={teacher_dir(study, factor)}")
    if factor.module_epochs and distill in MODULE_PHASE_METHODS:  # the module phase as the reference counts it
        command = [c for c in command if not c.startswith(("--iep_module_steps=", "--distill_args=pre_phase_steps"))]
        if distill in IEP_METHODS:
            command.append(f"--iep_module_epochs={factor.module_epochs}")
    if factor.pre_phase_steps_of_rate and distill in PRE_PHASE:  # each pre-phase as long as at that rate
        main_steps = steps_per_epoch(factor.pre_phase_steps_of_rate) * epochs
        steps = default_pre_phase_steps(distill, main_steps, epochs)
        command = [c for c in command if not c.startswith(("--iep_module_epochs=", "--iep_module_steps="))]
        flag = "--iep_module_steps" if distill in IEP_METHODS else "--distill_args=pre_phase_steps"
        command.append(f"{flag}={steps}")
    if not factor.clip and distill in IEP_METHODS:
        command.append("--noiep_clip")
    return command, run_dir


# The loss each method's phase 1 minimizes, read at its last TensorBoard write (a mean over the last
# `--log_every` steps): IEP's module KLD, FitNet's hint regression, AB's activation-boundary loss, FSP's
# FSP-matrix L2, FT's paraphraser reconstruction, MHGD's estimator loss. The rest have no single phase 1 (SRM
# has two, its log gives both).
PHASE1_LOSS = {
    "iep": "pre_phase/module_kld",
    "iep_bb": "pre_phase/module_kld",
    "fitnet": "pre_phase/hint",
    "ab": "pre_phase/activation_boundary",
    "fsp": "pre_phase/fsp",
    "ft": "pre_phase/paraphrase",
    "mhgd": "pre_phase/estimator",
}
RIVALS = ("fitnet", "co")  # the methods that lead IEP at CPU scale


def _last_scalar(run_dir: str, tag: str) -> float | None:
    import tensorflow as tf

    values = []
    for path in sorted(glob.glob(os.path.join(run_dir, "tensorboard", "events.out.tfevents.*"))):
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            event = tf.compat.v1.Event.FromString(record)
            values += [(event.step, float(tf.make_ndarray(v.tensor))) for v in event.summary.value if v.tag == tag]
    return max(values)[1] if values else None


def final_test_accuracy(run_dir: str) -> float:
    """The test split, once, after the run (cached beside it)."""
    path = os.path.join(run_dir, "study_test.json")
    if not os.path.exists(path):
        from iep.engine.evaluation import evaluate

        write_json_atomic(path, {"top1": evaluate(run_dir=run_dir, split="test")["top1"]})
    return read_json(path)["top1"]


def check_teacher_matches_record(study: Study, factor: Factor, recorded: Recorded, tolerance: float = 0.0) -> None:
    """Recorded students learnt from the recorded teacher (see benchmarks/recorded.py)."""
    run_dir = teacher_dir(study, factor)
    if metrics := finished_metrics(run_dir):
        retrained = teacher_record(study, run_dir, metrics, {})
        recorded.check_teacher(retrained["run_dir"], retrained, run_dir, tolerance)


def factor_of(study: Study, name: str) -> Factor:
    return FACTORS.get(name) or combined_factor(read_json(os.path.join(study.root, "combined.json"))["factors"])


def run_record(run_dir: str, metrics: dict, method: str, seed: int, wall_times: dict) -> dict:
    """One finished student: accuracies, its phase-1 plateau and clip ratio, and where its wall time went."""
    history = metrics["history"]
    clip = [h["distill/clip_ratio"] for h in history if "distill/clip_ratio" in h]
    evals = [h["eval_seconds"] for h in history if h.get("eval_accuracy") is not None]
    phase1_tag = PHASE1_LOSS.get(variant_of(method)[0])
    return {
        "seed": seed,
        "teacher_test": _teacher_test(run_dir),  # the teacher this run learnt from (recorded runs keep theirs)
        "validation": metrics["last_accuracy"],
        "test": final_test_accuracy(run_dir),
        "clip_ratio": statistics.mean(clip) if clip else None,
        # each loss term's epoch mean at the first and the last epoch (which term dominates, and how it moved)
        "losses": {
            k: [history[0][k], history[-1][k]]
            for k in history[-1]
            if k.startswith(("loss/", "distill/")) and k in history[0] and history[0][k] is not None
        },
        "phase1_loss": _last_scalar(run_dir, phase1_tag) if phase1_tag else None,
        "pre_phase_steps": metrics.get("pre_phase_steps"),  # None: a run from before metrics.json recorded them
        # the last epoch's training cross-entropy: whether the student still had the training data to fit
        "final_cross_entropy": history[-1].get("loss/cross_entropy"),
        "epochs": len(history),
        "train_seconds": sum(h["seconds"] for h in history),
        "evaluations": len(evals),
        "eval_seconds": sum(evals),
        "wall_seconds": small.wall_seconds(run_dir, metrics, wall_times),
    }


def variant_of(method: str) -> tuple[str, list[str]]:
    """(`--distill`, extra train.py flags) of a study method: a variant's, e.g. iep_termclip → iep with the
    per-term clip, or a built-in method itself with none."""
    return VARIANTS.get(method, (method, []))


def _teacher_test(run_dir: str) -> float | None:
    """The test accuracy of the teacher a student's config.json names (None for the vanilla student)."""
    config = os.path.join(run_dir, "config.json")
    teacher = read_json(config).get("teacher") if os.path.exists(config) else None
    metrics = finished_metrics(teacher) if teacher and os.path.isdir(teacher) else None
    return metrics["last_accuracy"] if metrics else None


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def summarize(
    study: Study, factor_names: list[str], wall_times: dict | None = None, recorded: Recorded | None = None
) -> list[dict]:
    """One row per (factor, method) with finished runs: means and spreads over seeds, and every run. A run
    finished here wins; else a `recorded` one (marked `"recorded": true`) stands in for it."""
    wall_times = wall_times or {}
    recorded = recorded or Recorded()
    rows = []
    for name in factor_names:
        factor = factor_of(study, name)
        for method in (*TABLE_METHODS, *RETIRED):
            if method not in RETIRED and run_source(name, factor, method) != name:  # that factor's row has these runs
                continue
            runs = []
            for seed in range(factor.seeds or study.seeds):
                if method in RETIRED:  # its code is gone: its record, if the results file keeps one
                    runs += [old] if (old := recorded.run(name, method, seed)) else []
                    continue
                _, run_dir = student_run(study, name, factor, method, seed)
                if metrics := finished_metrics(run_dir):
                    record = run_record(run_dir, metrics, method, seed, wall_times)
                    runs.append({**record, "run_dir": os.path.relpath(run_dir, study.root)})
                elif old := recorded.run(name, method, seed):
                    runs.append(old)
            if not runs:
                continue
            validation, test = [r["validation"] for r in runs], [r["test"] for r in runs]
            rows.append(
                {
                    "factor": name,
                    "method": method,
                    "rate": factor.rate or min(study.protocol.rates),
                    "vanilla_factor": run_source(name, factor, "none"),  # whose vanilla student it is measured by
                    "seeds": len(runs),
                    "validation": statistics.mean(validation),
                    "validation_std": statistics.stdev(validation) if len(runs) > 1 else 0.0,
                    "test": statistics.mean(test),
                    "test_std": statistics.stdev(test) if len(runs) > 1 else 0.0,
                    "clip_ratio": _mean([r["clip_ratio"] for r in runs]),
                    "phase1_loss": _mean([r["phase1_loss"] for r in runs]),
                    "train_seconds": statistics.mean(r["train_seconds"] for r in runs),
                    "runs": runs,
                }
            )
    base = {r["method"]: r for r in rows if r["factor"] == "baseline"}
    vanillas = vanilla_rows(rows)
    for row in rows:
        ref_vanilla = vanilla_of(row, vanillas) if row["method"] != VANILLA else None
        row["decays_every_variable"] = row["method"] not in DECAY_KERNELS_ONLY
        row["vanilla"] = ref_vanilla["method"] if ref_vanilla else None  # the vanilla student it is measured by
        for split in ("validation", "test"):
            row[f"{split}_over_vanilla"] = row[split] - ref_vanilla[split] if ref_vanilla else None
        ref = base.get(row["method"])
        row["validation_gain"] = row["validation"] - ref["validation"] if ref else None
        row["test_gain"] = row["test"] - ref["test"] if ref else None
        # Seeds pair runs (same initialization and data order), so per-seed gains show whether a gain is consistent.
        ref_runs = {r["seed"]: r for r in ref["runs"]} if ref else {}
        row["validation_gain_per_seed"] = [
            r["validation"] - ref_runs[r["seed"]]["validation"] for r in row["runs"] if r["seed"] in ref_runs
        ]
    return rows


def accuracy_table(rows: list[dict], factors: dict[str, Factor], split: str) -> dict[str, dict[str, float]]:
    """factor → method → mean accuracy on `split`; a method's run under a factor that cannot change it
    is the baseline's (in a combination, the one single factor's that can)."""
    by_key = {(r["factor"], r["method"]): r[split] for r in rows}
    table = {}
    for name, factor in factors.items():
        table[name] = {}
        for method in TABLE_METHODS:
            key = (run_source(name, factor, method), method)
            if key in by_key:
                table[name][method] = by_key[key]
    return table


def gaps(rows: list[dict], factors: dict[str, Factor]) -> list[dict]:
    """Per factor: IEP and IEP+BB minus the better of FitNet and CO, on validation and test (the study's question)."""
    out = []
    tables = {split: accuracy_table(rows, factors, split) for split in ("validation", "test")}
    for name in factors:
        row = {"factor": name}
        for split, table in tables.items():
            accuracy = table[name]
            rivals = [accuracy[m] for m in RIVALS if m in accuracy]
            row[split] = accuracy
            for method in ("iep", "iep_bb"):
                ready = method in accuracy and len(rivals) == len(RIVALS)
                row[f"{method}_gap_{split}"] = accuracy[method] - max(rivals) if ready else None
        out.append(row)
    return out


def auto_combination(rows: list[dict]) -> list[str]:
    """The single protocol factors whose validation gain was positive for both IEP and IEP+BB."""
    gains = {(r["factor"], r["method"]): r["validation_gain"] for r in rows}
    candidates = [f for f in FACTORS if f != "baseline" and f not in NOT_COMBINED]
    return [f for f in candidates if all((gains.get((f, m)) or 0) > 0 for m in ("iep", "iep_bb"))]


def overhead(rows: list[dict], teachers: list[dict]) -> dict:
    """The study's measured wall time, and the same runs had every epoch been evaluated.

    The second figure is derived, not run: each run's measured wall time plus its skipped evaluations at that
    run's own measured mean seconds per evaluation.
    """
    runs = [r for row in rows for r in row["runs"]] + teachers
    skipped = sum((r["epochs"] - r["evaluations"]) * r["eval_seconds"] / max(r["evaluations"], 1) for r in runs)
    measured = sum(r["wall_seconds"] for r in runs)
    return {
        "runs": len(runs),
        "wall_seconds_measured": measured,
        "train_seconds": sum(r["train_seconds"] for r in runs),
        "eval_seconds": sum(r["eval_seconds"] for r in runs),
        "evaluations": sum(r["evaluations"] for r in runs),
        "wall_seconds_if_every_epoch_evaluated": measured + skipped,
    }


def _pct(x: float | None, signed: bool = False) -> str:
    return "—" if x is None else (f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}")


def vanilla_rows(rows: list[dict]) -> dict[tuple[str, str], dict]:
    """(factor, vanilla method) → row, for both vanilla students (decay on kernels, decay on every variable)."""
    return {(r["factor"], r["method"]): r for r in rows if r["method"] in (VANILLA, VANILLA_DECAY_ALL)}


def vanilla_of(row: dict, vanillas: dict[tuple[str, str], dict]) -> dict | None:
    """The vanilla row a row compares with: its factor's, or that of the factor whose vanilla run it reuses (the
    baseline's for a factor that cannot change the vanilla student); for a method that decays every variable,
    the vanilla student that does too where there is one, so that a gain is not a change of weight decay."""
    decays_all = row["method"] not in DECAY_KERNELS_ONLY and row["method"] != VANILLA_DECAY_ALL
    kinds = (VANILLA_DECAY_ALL, VANILLA) if decays_all else (VANILLA,)
    factors = (row["factor"], row.get("vanilla_factor", "baseline"))
    return next((vanillas[(f, k)] for k in kinds for f in factors if (f, k) in vanillas), None)


def loss_curve(row: dict) -> dict[str, tuple[float, float]]:
    """term → its epoch mean at the first and the last epoch, averaged over the row's runs that recorded it."""
    runs = [r["losses"] for r in row["runs"] if r.get("losses")]
    terms = [k for k in (runs[0] if runs else {}) if k.startswith("loss/") and all(k in r for r in runs)]
    return {k.removeprefix("loss/"): (_mean([r[k][0] for r in runs]), _mean([r[k][1] for r in runs])) for k in terms}


def below_vanilla_losses(rows: list[dict], vanillas: dict[tuple[str, str], dict]) -> list[str]:
    """For each method below its factor's vanilla student on validation, its loss terms at the first and the last
    epoch: the measurements a "why is it below" sentence rests on (which term dominates, which one never fell)."""
    below = [
        r
        for r in rows
        if r["method"] != VANILLA and (base := vanilla_of(r, vanillas)) and r["validation"] < base["validation"]
    ]
    if not below:
        return []
    lines = ["", "Below the vanilla student on validation; loss terms, epoch means at the first → last epoch:", ""]
    for r in below:
        curve = loss_curve(r)
        terms = ", ".join(f"{k} {first:.3f} → {last:.3f}" for k, (first, last) in curve.items()) or "not recorded"
        lines.append(f"- {r['factor']} / {r['method']}: {terms}")
    return lines


def markdown(rows: list[dict], gap_rows: list[dict], teachers: list[dict] | None = None) -> str:
    """The rows, each against the baseline's run of its method (gain) and its factor's vanilla student (a factor
    that cannot change the vanilla student reuses the baseline's); the IEP gap table when IEP ran.

    Columns that carry nothing are left out: the gains when the baseline factor is all there is (they are 0) or
    no row has a baseline run to compare with, the clip ratio and phase-1 loss when no row has them."""
    vanillas = vanilla_rows(rows)

    def versus_vanilla(r: dict) -> str:
        base = vanilla_of(r, vanillas)
        if base is None or r["method"] == VANILLA:
            return "—"
        return f"{_pct(r['validation'] - base['validation'], True)} / {_pct(r['test'] - base['test'], True)}"

    columns = [
        ("factor", lambda r: r["factor"]),
        ("method", lambda r: r["method"]),
        ("seeds", lambda r: str(r["seeds"])),
        ("val ± std", lambda r: mean_spread(r["validation"], r["validation_std"], r["seeds"])),
        ("gain (val)", lambda r: _pct(r["validation_gain"], True)),
        ("test ± std", lambda r: mean_spread(r["test"], r["test_std"], r["seeds"])),
        ("gain (test)", lambda r: _pct(r["test_gain"], True)),
        ("− vanilla (val / test)", versus_vanilla),
        ("clip ratio", lambda r: "—" if r["clip_ratio"] is None else f"{r['clip_ratio']:.3f}"),
        ("phase-1 loss", lambda r: "—" if r["phase1_loss"] is None else f"{r['phase1_loss']:.2f}"),
        ("train s", lambda r: f"{r['train_seconds']:.0f}"),
    ]
    left_out = set()
    if {r["factor"] for r in rows} <= {"baseline"} or all(r["validation_gain"] is None for r in rows):
        left_out |= {"gain (val)", "gain (test)"}
    for header, key in (("clip ratio", "clip_ratio"), ("phase-1 loss", "phase1_loss")):
        if all(r[key] is None for r in rows):
            left_out.add(header)
    columns = [(header, cell) for header, cell in columns if header not in left_out]
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r) for _, cell in columns) + " |" for r in rows]
    lines += below_vanilla_losses(rows, vanillas)
    if note := teachers_sentence(rows, teachers or []):
        lines += ["", note + "."]
    gap_rows = [g for g in gap_rows if any(m in g["validation"] for m in ("iep", "iep_bb"))]
    if not gap_rows:
        return "\n".join(lines) + "\n"
    lines += [
        "",
        "Gap to the better of FitNet and CO (points; negative: IEP behind):",
        "",
        "| factor | val: none / IEP / IEP+BB / FitNet / CO | IEP gap (val) | IEP+BB gap (val) | IEP gap (test) "
        "| IEP+BB gap (test) |",
        "|---|---|---|---|---|---|",
    ]
    for g in gap_rows:
        accuracies = " / ".join(_pct(g["validation"].get(m)) for m in METHODS)
        lines.append(
            f"| {g['factor']} | {accuracies} | {_pct(g['iep_gap_validation'], True)} "
            f"| {_pct(g['iep_bb_gap_validation'], True)} | {_pct(g['iep_gap_test'], True)} "
            f"| {_pct(g['iep_bb_gap_test'], True)} |"
        )
    return "\n".join(lines) + "\n"


def teacher_record(study: Study, run_dir: str, metrics: dict, wall_times: dict) -> dict:
    """One finished teacher in run_record's shape (for accuracy and overhead), with its last epoch's loss, the
    figure that tells a retrained teacher from the recorded one."""
    history = metrics["history"]
    evals = [h["eval_seconds"] for h in history if h.get("eval_accuracy") is not None]
    return {
        "run_dir": os.path.relpath(run_dir, study.root),
        "arch": metrics["arch"],
        "test": metrics["last_accuracy"],
        "final_loss": history[-1].get("train_loss"),
        # every epoch's loss: where a teacher retrained elsewhere parts from this one (oneDNN picks kernels by the
        # CPU, so another machine can train a different teacher from the same seed)
        "train_losses": [h.get("train_loss") for h in history],
        "cpu": cpu_model(),
        "epochs": len(history),
        "train_seconds": sum(h["seconds"] for h in history),
        "evaluations": len(evals),
        "eval_seconds": sum(evals),
        "wall_seconds": small.wall_seconds(run_dir, metrics, wall_times),
    }


def teacher_records(
    study: Study, factor_names: list[str], wall_times: dict, recorded: Recorded | None = None
) -> list[dict]:
    """The teachers of these factors' students: the one finished here, and each recorded one that differs from it
    (students kept within --teacher_tolerance learnt from those), or the recorded ones where none finished here."""
    recorded = recorded or Recorded()
    out: dict[str, list[dict]] = {}
    for name in factor_names:
        run_dir = teacher_dir(study, factor_of(study, name))
        key = os.path.relpath(run_dir, study.root)
        if key in out:
            continue
        here = [teacher_record(study, run_dir, metrics, wall_times)] if (metrics := finished_metrics(run_dir)) else []
        others = [t for t in recorded.teachers.get(key, []) if not here or teacher_differences(t, here[0])]
        out[key] = here + [{**t, "recorded": True} for t in others]
    return [teacher for teachers in out.values() for teacher in teachers]


def unknown_choice(factors: list[str], methods: list[str], combine: list[str]) -> str | None:
    """The first flag naming a factor or method the study does not have, as its error (None: all known)."""
    for flag, given, known in (
        ("factors", factors, [*FACTORS, "combined"]),
        ("methods", methods, list(TABLE_METHODS)),  # or `all` alone
        ("combine", combine, ["auto", *(f for f in FACTORS if f != "baseline")]),
    ):
        if unknown := [value for value in given if value not in known]:
            return f"unknown --{flag} {unknown}; choose from {known}" + (" (or all)" if flag == "methods" else "")
    return None


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    methods = list(TABLE_METHODS) if FLAGS.methods == ["all"] else FLAGS.methods
    if error := unknown_choice(FLAGS.factors, methods, FLAGS.combine):
        raise app.UsageError(error)
    if FLAGS.seeds < 1:
        raise app.UsageError(f"--seeds must be >= 1, got {FLAGS.seeds}")
    if FLAGS.parallel < 1:
        raise app.UsageError(f"--parallel must be at least 1 (runs at a time), got {FLAGS.parallel}")
    if not os.path.isdir(FLAGS.data_dir):
        raise app.UsageError(f"--data_dir {FLAGS.data_dir!r} is not a directory of CIFAR-10 TFRecords")
    quick = "_quick" if FLAGS.quick else ""
    study = Study(
        small.QUICK if FLAGS.quick else small.FULL,
        FLAGS.root or os.path.join("runs", f"protocol_study{quick}"),
        FLAGS.data_dir,
        FLAGS.seeds,
    )
    if FLAGS.report_only and not os.path.isdir(study.root):
        raise app.UsageError(f"--root {study.root!r} does not exist: there are no runs to report")
    try:
        os.makedirs(study.root, exist_ok=True)
    except OSError as error:
        raise app.UsageError(f"--root {study.root!r} cannot be created ({error.strerror})") from None
    name = FLAGS.results_name or f"protocol_study{quick}"
    recorded = Recorded() if FLAGS.rerun_recorded else Recorded.read(results_path(name), ("factor", "method"))
    if not FLAGS.report_only:
        factors = [f for f in FLAGS.factors if f != "combined"]
        run_factors(study, factors, methods, recorded, FLAGS.parallel, FLAGS.teacher_tolerance)
        if "combined" in FLAGS.factors:
            run_combined(study, FLAGS.combine, methods)
    report(study, name, recorded, FLAGS.factors, methods)


def results_path(name: str) -> str:
    return os.path.join(small.RESULTS_DIR, f"{name}.json")


def run_factors(
    study: Study,
    names: list[str],
    methods: list[str],
    recorded: Recorded | None = None,
    parallel: int = 1,
    teacher_tolerance: float = 0.0,
) -> None:
    """Each factor's teacher, then its students seed by seed, `parallel` at a time (skipping runs the factor
    cannot change, and runs the results file records that this machine has no finished run of: see `Recorded`)."""
    recorded = recorded or Recorded()
    wall_times = os.path.join(study.root, "wall_times.json")
    for name in names:
        factor = FACTORS[name]
        teacher = teacher_run(study, factor)
        small.run_job(*teacher, wall_times)
        check_teacher_matches_record(study, factor, recorded, teacher_tolerance)
        students = []
        for method, seed, command, run_dir in factor_students(study, name, factor, methods):
            if recorded.stands_in(run_dir, name, method, seed):
                print(f"recorded in the results file, not trained again: {name} {method} seed {seed}")
                continue
            students.append((command, run_dir))
        small.run_students(students, wall_times, parallel)


def factor_students(
    study: Study, name: str, factor: Factor, methods: list[str]
) -> Iterator[tuple[str, int, list[str], str]]:
    """(method, seed, train.py command, run dir) of each student run that is factor `name`'s own (not one it
    reuses from another factor), seed by seed in the `methods` order: the order the study trains them."""
    for seed in range(factor.seeds or study.seeds):
        for method in methods:
            if run_source(name, factor, method) == name and factor.trains(method):
                yield method, seed, *student_run(study, name, factor, method, seed)


def run_combined(study: Study, combine: list[str], methods: list[str]) -> None:
    chosen = auto_combination(summarize(study, list(FACTORS))) if combine == ["auto"] else combine
    if not chosen:
        print("combined: no single factor raised both IEP and IEP+BB on validation; nothing to combine")
        return
    write_json_atomic(os.path.join(study.root, "combined.json"), {"factors": chosen})
    factor = combined_factor(chosen)
    wall_times = os.path.join(study.root, "wall_times.json")
    small.run_job(*teacher_run(study, factor), wall_times)
    for _, _, command, run_dir in factor_students(study, "combined", factor, methods):  # else a single factor's
        small.run_job(command, run_dir, wall_times)


def still_to_train(study: Study, names: list[str], methods: list[str], recorded: Recorded | None = None) -> list[dict]:
    """The runs of `names` × `methods` × seeds that neither finished here nor are recorded, in the order the study
    trains them, each with where it stands (`run_state`): what a study spread over sessions has left."""
    recorded = recorded or Recorded()
    left = []
    for name in names:
        for method, seed, _, run_dir in factor_students(study, name, factor_of(study, name), methods):
            if not finished(run_dir) and (name, method, seed) not in recorded.runs:
                left.append({"factor": name, "method": method, "seed": seed, "state": run_state(run_dir)})
    return left


def to_train_lines(left: list[dict], methods: list[str]) -> list[str]:
    """The report's closing paragraph on what is left of `methods` (the runs a resumed study trains, in order)."""
    asked = f"the {len(methods)} method{'' if len(methods) == 1 else 's'} asked for"
    if not left:
        return ["", f"Every run of {asked} has finished."]
    several = len({r["factor"] for r in left}) > 1
    runs = "; ".join(
        f"{r['factor'] + ' ' if several else ''}{r['method']} seed {r['seed']} ({r['state']})" for r in left
    )
    count = f"{len(left)} run{'' if len(left) == 1 else 's'}"
    return ["", f"Still to train ({count} of {asked}, in the order this --methods list trains them): {runs}."]


def report_factors(study: Study, factors: list[str]) -> list[str]:
    """The factors a report covers: those asked for, in the study's order (`combined` once it has been chosen).
    Why: studies share a root and a teacher, so a 100-epoch table must not pick up the 15-epoch runs beside it."""
    combined = os.path.exists(os.path.join(study.root, "combined.json"))
    return [n for n in FACTORS if n in factors] + (["combined"] if combined and "combined" in factors else [])


def report(
    study: Study,
    name: str,
    recorded: Recorded | None = None,
    factors: list[str] | None = None,
    methods: list[str] | None = None,
) -> None:
    """Aggregates the finished (or recorded) runs of `factors` (default: all) into benchmarks/results/<name>.*,
    and lists the runs of `methods` still to train (none given: no list)."""
    from benchmarks.results_io import write_results

    combined = os.path.join(study.root, "combined.json")
    names = report_factors(study, [*FACTORS, "combined"] if factors is None else factors)
    wall_times = os.path.join(study.root, "wall_times.json")
    times = read_json(wall_times) if os.path.exists(wall_times) else {}
    rows = summarize(study, names, times, recorded)
    gap_rows = gaps(rows, {n: factor_of(study, n) for n in names if any(r["factor"] == n for r in rows)})
    teachers = teacher_records(study, names, times, recorded)
    order = [n for n in (factors or []) if n in names] or names  # the order the study trains them in
    left = None if methods is None else still_to_train(study, order, methods, recorded)
    settings = {
        "protocol": dataclasses.asdict(study.protocol),
        "seeds": study.seeds,
        "validation_fraction": VALIDATION_FRACTION,
        "eval_every": EVAL_EVERY,
        "combined_factors": read_json(combined)["factors"] if os.path.exists(combined) else None,
        "teachers": teachers,
        "overhead": overhead(rows, teachers),
        "gaps": gap_rows,
        "still_to_train": left,
    }
    os.makedirs(small.RESULTS_DIR, exist_ok=True)
    write_results(results_path(name), settings, rows)
    table = markdown(rows, gap_rows, teachers)
    if left is not None:
        table += "\n".join(to_train_lines(left, methods)) + "\n"
    with open(os.path.join(small.RESULTS_DIR, f"{name}.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
