"""The teacher's sensing points as compressed PCs, and the student's in the same space (docs/methods.md §2–3, §8).

Shared by IEP and MHGD: one StackedPCA per teacher point, an adapter per
student point whose shape differs, and the projection of the student through
the teacher's spatial vectors and second-PCA basis.
"""

from __future__ import annotations

import tensorflow as tf

from iep.nets import TappedNetwork
from iep.procedure.adapters import TapAdapter, needs_adapter
from iep.procedure.spca import StackedPCA, project_student


class SensingPoints:
    def __init__(self, method: str, teacher: TappedNetwork, student: TappedNetwork, second_pca: str = "ipca"):
        t_specs, s_specs = teacher.tap_specs, student.tap_specs
        if len(t_specs) != len(s_specs) or len(t_specs) < 2:
            raise ValueError(
                f"{method} needs the same number (>= 2) of sensing points in teacher ({len(t_specs)}: "
                f"{[t.shape for t in t_specs]}) and student ({len(s_specs)}: {[s.shape for s in s_specs]})"
            )
        self.teacher = teacher
        self.widths = [t.shape[-1] // 2 for t in t_specs]  # compressed PCs per point: D/2
        self.adapters = [
            TapAdapter(s.shape, t.shape, name=f"{method}_adapter_{i}") if needs_adapter(s.shape, t.shape) else None
            for i, (s, t) in enumerate(zip(s_specs, t_specs, strict=True))
        ]
        self.spca = [StackedPCA(second_pca, name=f"{method}_spca_{i}") for i in range(len(t_specs))]
        for spca, spec in zip(self.spca, t_specs, strict=True):
            spca.build((None, *spec.shape))
        for adapter, spec in zip(self.adapters, s_specs, strict=True):
            if adapter is not None:
                adapter(tf.zeros((2, *spec.shape)))

    @property
    def adapter_variables(self) -> list[tf.Variable]:
        return [v for a in self.adapters if a is not None for v in a.trainable_variables]

    @property
    def present_adapters(self) -> list[TapAdapter]:
        return [a for a in self.adapters if a is not None]

    def teacher_points(self, images: tf.Tensor, update: bool) -> list[dict[str, tf.Tensor]]:
        taps = self.teacher(images, training=False)["taps"]
        return [spca(tap, update=update) for spca, tap in zip(self.spca, taps, strict=True)]

    def student_compressed(self, taps, points, training: bool) -> list[tf.Tensor]:
        compressed = []
        for adapter, tap, point in zip(self.adapters, taps, points, strict=True):
            if adapter is not None:
                tap = adapter(tap, training=training)
            compressed.append(project_student(tap, point["u"], point["mean"], point["basis"]))
        return compressed
