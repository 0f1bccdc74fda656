"""Settings taken from the baselines' reference code as it executes: FT's layers, what weight decay reaches,
how long each pre-phase runs, KD's two weightings and IEP's module initializer."""

import numpy as np
import pytest
import tensorflow as tf

from iep.baselines.factor_transfer import LEAKY_SLOPE
from iep.baselines.logit_kd import kd_loss
from iep.engine.trainer import TrainConfig, Trainer
from iep.methods import REGISTRY, STATIC_METHODS, build_distiller
from iep.nets import build_network
from tests.helpers import IndexedLabels, frozen_teacher_and_student

RNG = np.random.default_rng(11)


def _leaky(x):
    return np.where(x > 0, x, LEAKY_SLOPE * x)


def _relu(x):
    return np.maximum(x, 0.0)


def _bn_frozen(x, bn):
    """tcl.BatchNorm outside training: the moving statistics (never updated: 0 and 1), then γ, β."""
    mean, var = bn.moving_mean.numpy(), bn.moving_variance.numpy()
    return bn.gamma.numpy() * (x - mean) / np.sqrt(var + bn.epsilon) + bn.beta.numpy()


def _conv(x, layer):
    op = tf.nn.conv2d_transpose if "convt" in layer.name else tf.nn.conv2d
    if op is tf.nn.conv2d:
        return tf.nn.conv2d(x, layer.kernel, layer.strides, "SAME").numpy()
    b, h, w, _ = x.shape
    shape = [b, h * layer.strides[0], w * layer.strides[1], layer.filters]
    return tf.nn.conv2d_transpose(x, layer.kernel, shape, layer.strides, "SAME").numpy()


def test_ft_paraphraser_and_translator_follow_the_tf2_code_as_executed():
    """tcl's arg_scope overwrites explicit kwargs: ReLU after every (transposed) conv but the translator's last,
    leaky ReLU after every BN, no bias anywhere, the paraphraser's BN at mean 0 / var 1."""
    teacher, student = build_network("wrn-10-1", 10), build_network("wrn-10-1", 10)
    ft = build_distiller("ft", teacher, student, main_steps=10, epochs=1)
    for module in (ft.paraphraser_encoder, ft.paraphraser_decoder, ft.translator):
        assert not [v.name for v in module.weights if "bias" in v.name], module.name
    feature = RNG.normal(size=(2, 8, 8, 64)).astype(np.float32)
    for bn in [layer for layer in ft.paraphraser_encoder.layers if "_bn" in layer.name and "leaky" not in layer.name]:
        bn.gamma.assign(RNG.uniform(0.5, 1.5, bn.gamma.shape))
        bn.beta.assign(RNG.normal(size=bn.beta.shape) * 0.1)

    def run(module, x, relu_after_last_conv=True):
        convs = [layer for layer in module.layers if layer.name.split("_")[-1].startswith("conv")]
        bns = [layer for layer in module.layers if layer.name.split("_")[-1].startswith("bn")]
        for i, conv in enumerate(convs):
            x = _conv(x, conv)
            if relu_after_last_conv or i < len(convs) - 1:
                x = _relu(x)
            if i < len(bns):
                x = _leaky(_bn_frozen(x, bns[i]))
        return x

    encoded = run(ft.paraphraser_encoder, feature)
    np.testing.assert_allclose(ft.paraphraser_encoder(feature, training=False).numpy(), encoded, rtol=1e-4, atol=1e-5)
    rebuilt = run(ft.paraphraser_decoder, _leaky(encoded))
    np.testing.assert_allclose(
        ft.paraphraser_decoder(_leaky(encoded), training=False).numpy(), rebuilt, rtol=1e-4, atol=1e-5
    )
    assert rebuilt.min() >= 0.0  # the last transposed conv keeps its ReLU
    translated = run(ft.translator, feature, relu_after_last_conv=False)
    np.testing.assert_allclose(ft.translator(feature, training=False).numpy(), translated, rtol=1e-4, atol=1e-5)

    images = tf.random.uniform((4, 32, 32, 3), 0, 255, seed=1)
    moving = [v.numpy().copy() for v in ft.paraphraser_encoder.non_trainable_weights]
    ft.pre_phase_losses(images, tf.zeros([4], tf.int32))
    for before, v in zip(moving, ft.paraphraser_encoder.non_trainable_weights, strict=True):
        np.testing.assert_array_equal(before, v.numpy())  # the pre-phase never updates the moving statistics


def _decay_of(distiller, student):
    return {id(v) for v in distiller.decayed(student.model.trainable_variables)}


# DIST's ImageNet setting decays kernels only (image_classification_sota lib/utils/optim.py: no 1-D parameter);
# its CIFAR setting, the default, every variable (dist_cifar.yaml's opt_no_filter)
@pytest.mark.parametrize("method", sorted(set(REGISTRY) - set(STATIC_METHODS)))
def test_baselines_decay_every_trained_variable_as_their_references(method):
    teacher, student = build_network("wrn-10-1", 10), build_network("wrn-10-1", 10)
    data = IndexedLabels(np.arange(100) % 10) if method == "crd" else None
    distiller = build_distiller(method, teacher, student, main_steps=10, epochs=1, seed=0, data=data)
    expected = {id(v) for v in [*student.model.trainable_variables, *distiller.trainable_variables]}
    assert _decay_of(distiller, student) == expected
    names = {v.name for v in distiller.decayed(student.model.trainable_variables)}
    assert {"gamma", "beta", "bias"} <= names  # BN scale/offset and the classifier's bias, not just kernels


@pytest.mark.parametrize("method", ["none", "iep", "iep_bb", "dist"])
def test_iep_and_plain_training_decay_kernels_only(method):
    teacher, student = build_network("wrn-10-1", 10), build_network("wrn-10-1", 10)
    options = {"setting": "imagenet"} if method == "dist" else {}
    distiller = build_distiller(
        method, teacher if method != "none" else None, student, main_steps=10, epochs=1, **options
    )
    decayed = distiller.decayed(student.model.trainable_variables)
    assert decayed and {v.name for v in decayed} == {"kernel"}
    assert not {id(v) for v in decayed} & {id(v) for v in distiller.trainable_variables}


def test_the_loop_decays_what_the_method_says(cifar10_subset, tmp_path):
    """CO: the logged weight decay is wd · Σ ½‖v‖² over the student's and the connectors' every variable."""
    teacher, student = frozen_teacher_and_student(cifar10_subset, "wrn-10-1", "wrn-10-1")
    distiller = build_distiller("co", teacher, student)
    config = TrainConfig(epochs=1, batch_size=100, progress=False, export=False, weight_decay=5e-4)
    trainer = Trainer(student, cifar10_subset, config, str(tmp_path), distiller)
    variables = [*student.model.trainable_variables, *distiller.trainable_variables]
    expected = 5e-4 * sum(0.5 * float(np.sum(v.numpy().astype(np.float64) ** 2)) for v in variables)
    assert len(trainer._decayed) == len(variables)
    got = float(tf.add_n([tf.nn.l2_loss(v) for v in trainer._decayed])) * 5e-4
    assert got == pytest.approx(expected, rel=1e-5)


def test_pre_phases_last_as_their_references_count_them():
    teacher, student = build_network("wrn-10-1", 10), build_network("wrn-10-1", 10)
    steps = {
        m: build_distiller(m, teacher, student, main_steps=1000, epochs=100).pre_phase_steps
        for m in ("fitnet", "ab", "ft", "fsp", "mhgd")
    }
    # TF2 benchmark: 30 % (FitNet, AB, FT); TF1 train_w_distill.py: init_epoch = 40 of 100 (FSP), 40 epochs (MHGD).
    assert steps == {"fitnet": 300, "ab": 300, "ft": 300, "fsp": 400, "mhgd": 400}
    assert build_distiller("mhgd", teacher, student, main_steps=150, epochs=15).pre_phase_steps == 400
    # FT's paraphraser trains on the teacher only: 30 passes whatever the run's length (CLOCK_RULE), where it was
    # 30 % of the main steps (45 of a 150-step run).
    assert build_distiller("ft", teacher, student, main_steps=150, epochs=15).pre_phase_steps == 300
    assert build_distiller("fitnet", teacher, student, main_steps=150, epochs=15).pre_phase_steps == 45
    srm = build_distiller("srm", teacher, student, main_steps=150, epochs=15)
    assert (srm.dictionary_steps, srm.init_steps) == (1000, 120)  # 100 passes; 0.8 of the main steps
    # IEP's module phase: the reference's 20 epochs of this run.
    assert build_distiller("iep", teacher, student, main_steps=150, epochs=15).pre_phase_steps == 200
    with pytest.raises(ValueError, match="mhgd: give pre_phase_steps .or main_steps and epochs"):
        build_distiller("mhgd", teacher, student, main_steps=150)
    # no silent 8,000-step module phase where the run's size is unknown (under model.fit): refused likewise
    with pytest.raises(ValueError, match="iep_bb: give module_steps .or main_steps and epochs"):
        build_distiller("iep_bb", teacher, student)
    assert build_distiller("iep", teacher, student, module_steps=7).pre_phase_steps == 7


def test_kd_settings_author_and_mdistiller():
    teacher, student = build_network("wrn-10-1", 10), build_network("wrn-10-1", 10)
    author = build_distiller("kd", teacher, student)
    assert (author.temperature, author.weight, author.cross_entropy_weight, author.scale_by_t2) == (4, 0.3, 0.7, False)
    mdistiller = build_distiller("kd", teacher, student, overrides={"setting": "mdistiller"})
    assert (mdistiller.weight, mdistiller.cross_entropy_weight, mdistiller.scale_by_t2) == (0.9, 0.1, True)
    custom = build_distiller("kd", teacher, student, overrides={"setting": "mdistiller", "temperature": "2"})
    assert custom.temperature == 2.0 and custom.weight == 0.9
    with pytest.raises(ValueError, match="setting for kd must be one of"):
        build_distiller("kd", teacher, student, overrides={"setting": "hinton"})

    s, t = RNG.normal(size=(4, 10)), RNG.normal(size=(4, 10)) * 2
    p = np.exp(t / 4) / np.exp(t / 4).sum(-1, keepdims=True)
    log_q = s / 4 - np.log(np.exp(s / 4).sum(-1, keepdims=True))
    kl = np.mean((p * (np.log(p) - log_q)).sum(-1))  # Response.Soft_logits: no T²
    np.testing.assert_allclose(kd_loss(tf.constant(s), tf.constant(t), 4.0, scale_by_t2=False).numpy(), kl, rtol=1e-6)
    np.testing.assert_allclose(kd_loss(tf.constant(s), tf.constant(t), 4.0).numpy(), 16 * kl, rtol=1e-6)


def test_iep_module_dense_layers_use_the_fan_out_initializer():
    """IEPKT's arg scope: variance scaling, factor 2, FAN_OUT, truncated normal (std ≈ sqrt(2 / fan_out))."""
    teacher, student = build_network("wrn-16-4", 10), build_network("wrn-16-4", 10)
    iep = build_distiller("iep_bb", teacher, student, module_steps=1, seed=0)
    dense = [layer for m in (*iep.mpnn, *iep.mhgd) for layer in m._flatten_layers() if hasattr(layer, "kernel")]
    dense = [layer for layer in dense if layer.kernel.shape[-1] >= 64]
    assert dense
    for layer in dense:
        kernel = layer.kernel.numpy()
        expected = np.sqrt(2.0 / kernel.shape[-1])  # Glorot would be sqrt(2 / (fan_in + fan_out))
        assert kernel.std() == pytest.approx(expected, rel=0.15), layer.name
        assert np.abs(kernel).max() <= 2.0 * expected / 0.87962566103423978 + 1e-6  # truncated at 2σ


def test_the_clock_rule_states_every_methods_defaults():
    """CLOCK_RULE (--helpfull, docs/methods.md) names each reference clock's value: it must be the code's."""
    import inspect
    import re

    from iep.baselines.logit_kd import DKDDistiller
    from iep.baselines.srm import DICTIONARY_EPOCHS, INIT_FRACTION
    from iep.methods import CLOCK_RULE, PRE_PHASE
    from iep.procedure.distiller import DEFAULT_MODULE_EPOCHS

    def stated(pattern):
        return float(re.search(pattern, CLOCK_RULE).group(1))

    assert stated(r"IEP's module (\d+)") == DEFAULT_MODULE_EPOCHS
    assert PRE_PHASE["mhgd"] == ("epochs", stated(r"MHGD's heads (\d+)"))
    assert PRE_PHASE["ft"] == ("epochs", stated(r"FT's paraphraser (\d+)"))
    assert DICTIONARY_EPOCHS == stated(r"SRM's dictionary (\d+)")
    assert PRE_PHASE["fitnet"] == PRE_PHASE["ab"] == ("fraction", stated(r"initialization (\d+) %") / 100)
    assert PRE_PHASE["fsp"] == ("fraction", stated(r"FSP's (\d+) %") / 100)
    assert INIT_FRACTION == stated(r"student initialization (\d+) %") / 100
    warmup = inspect.signature(DKDDistiller.__init__).parameters["warmup_fraction"].default
    assert warmup == pytest.approx(20 / 240) and "DKD's, 20/240 of the run" in CLOCK_RULE
    assert PRE_PHASE["iep"] == PRE_PHASE["iep_bb"] == ("epochs", float(DEFAULT_MODULE_EPOCHS))
    assert set(PRE_PHASE) == {"iep", "iep_bb", "fitnet", "ab", "ft", "fsp", "mhgd"}  # each named in the rule


def test_iep_flags_are_aliases_of_its_distill_args(tmp_path):
    """--helpfull states the clock rule; an --iep_* flag and its --distill_args twin are refused before any data
    is read."""
    from absl import flags as absl_flags

    from iep.apps import train
    from iep.methods import CLOCK_RULE
    from tests.helpers import train_in_process

    assert CLOCK_RULE in absl_flags.FLAGS["distill_args"].help
    assert "MHGD's heads 40" in CLOCK_RULE and "longer than a short run's main phase" in CLOCK_RULE
    assert "every trained variable" in absl_flags.FLAGS["weight_decay"].help  # the baselines' decay, not kernels
    for flags_, message in (
        (("--iep_iterations=3", "--distill_args=iterations=2"), "--iep_iterations and --distill_args iterations"),
        (("--iep_module_epochs=1", "--distill_args=module_steps=4"), "--iep_module_epochs and --distill_args"),
    ):
        with pytest.raises(ValueError, match=message):
            train_in_process(tmp_path / "run", "--distill=iep", "--teacher=nowhere", *flags_)
    assert train.IEP_FLAG_ALIASES["iep_module_epochs"] == "module_epochs"


def _random_variables(distiller) -> list[np.ndarray]:
    """The distiller's own variables (main and pre-phase modules) that did not start constant (zeros, ones)."""
    variables = list(distiller.trainable_variables)
    for phase in distiller.pre_phases():
        variables += list(phase.variables)
    unique = {id(v): v.numpy() for v in variables}
    return [value for value in unique.values() if value.size > 1 and np.std(value) > 0]


@pytest.mark.parametrize(
    "method, seed",
    [*((m, 0) for m in [*sorted(set(REGISTRY) - set(STATIC_METHODS)), "iep", "iep_bb"]), ("vid", None),
     ("reviewkd", None)],
)  # fmt: skip
def test_no_two_random_variables_of_a_method_start_equal(method, seed):
    """A Keras 3 initializer returns the same tensor on every call: one initializer or one seed reused for two
    layers started them equal (VID's regressor convs). Teacher and student of one shape, so shapes coincide."""
    teacher, student = build_network("wrn-10-1", 10, name="t"), build_network("wrn-10-1", 10, name="s")
    data = IndexedLabels(np.arange(100) % 10) if method == "crd" else None
    distiller = build_distiller(method, teacher, student, main_steps=10, epochs=1, seed=seed, data=data)
    values = _random_variables(distiller)
    equal = [
        (a.shape, i, j)
        for i, a in enumerate(values)
        for j, b in enumerate(values[i + 1 :], start=i + 1)
        if a.shape == b.shape and np.array_equal(a, b)
    ]
    assert not equal, f"{method}: variables {equal} start equal"
    if method == "vid":
        assert sum(v.ndim == 4 for v in values) == 3 * len(student.tap_specs)  # the check saw every conv
