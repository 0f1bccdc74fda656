"""Train an image classifier, optionally by knowledge distillation from a teacher.

The command lives in `iep/apps/train.py` (installed, it is also `iep-train`); `python train.py --helpfull`
lists its flags.
"""

import iep

iep.leave_source_root_off_sys_path()

from iep.apps.train import run  # noqa: E402

if __name__ == "__main__":
    run()
