"""Evaluate a trained classifier on a data split.

The command lives in `iep/apps/evaluate.py` (installed, it is also `iep-eval`); `python eval.py --helpfull`
lists its flags.
"""

import iep

iep.leave_source_root_off_sys_path()

from iep.apps.evaluate import run  # noqa: E402

if __name__ == "__main__":
    run()
