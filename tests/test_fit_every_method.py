"""Every method trains under `model.fit` (`DistillationModel`); tests/test_keras_fit.py checks, for the methods
with their own machinery, that fit takes exactly the trainer's steps. A file of its own: pytest-xdist schedules
by file here (pyproject.toml), and these 18 runs would otherwise queue behind that file's."""

import keras
import numpy as np
import pytest

from iep.keras_fit import DistillationModel
from iep.methods import REGISTRY, build_distiller
from iep.nets import build_network
from tests.helpers import tiny_user_data


def _data():
    return tiny_user_data(np.random.default_rng(9))


# Every other method, each with its pre-phases cut to one step (the options the trainer's clocks read): under
# fit its terms are reported, its own modules train and the student moves. CO needs BN before the teacher's
# points (a WRN teacher); static_kd needs semantic vectors (tests/test_static_kd.py).
_SHORT_PRE_PHASES = {
    **{method: {"pre_phase_steps": 1} for method in ("ft", "mhgd", "ab", "fsp")},
    "srm": {"dictionary_epochs": 0.5, "init_fraction": 0.5},
}
# checked against the trainer in tests/test_keras_fit.py (IEP and IEP+BB too, registered apart)
_EQUIVALENCE_CHECKED = {"kd", "fitnet", "crd", "reviewkd", "mlkd", "static_kd"}


@pytest.mark.parametrize("method", sorted(set(REGISTRY) - _EQUIVALENCE_CHECKED))
def test_every_method_trains_under_fit(method):
    data = _data()
    keras.utils.set_random_seed(0)
    teacher_arch = "wrn-10-1" if method == "co" else "resnet8"
    teacher = build_network(teacher_arch, 4, data.input_shape, data.mean, data.std, name="teacher")
    teacher.model.trainable = False
    student = build_network("resnet8", 4, data.input_shape, data.mean, data.std, name="student")
    distiller = build_distiller(method, teacher, student, seed=0, main_steps=2, epochs=1,
                                **_SHORT_PRE_PHASES.get(method, {}))  # fmt: skip
    student_start = [w.copy() for w in student.model.get_weights()]
    module_start = [v.numpy().copy() for v in distiller.trainable_variables]
    model = DistillationModel(student, distiller)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True))
    history = model.fit(data.train_dataset(0, 32, 0), epochs=1, verbose=0, pre_phase_data=data, batch_size=32)

    assert model.pre_phases_done
    for name in distiller.loss_names:
        assert np.isfinite(history.history[f"loss_{name}"][0]), name
    assert any(not np.array_equal(a, b) for a, b in zip(student_start, student.model.get_weights(), strict=True))
    if module_start:  # the method's own modules (regressors, the DML peer, ...) train under fit too
        after = [v.numpy() for v in distiller.trainable_variables]
        moved = [not np.array_equal(a, b) for a, b in zip(module_start, after, strict=True)]
        assert any(moved), f"{method}: none of its {len(moved)} variables changed"
