"""See how networks embed a data split (SPCA, graphs, t-SNE/IVIS, cluster metrics).

The command lives in `iep/apps/visualize.py` (installed, it is also `iep-visualize`); `python visualize.py --helpfull`
lists its flags.
"""

import iep

iep.leave_source_root_off_sys_path()

from iep.apps.visualize import run  # noqa: E402

if __name__ == "__main__":
    run()
