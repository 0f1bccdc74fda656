"""The shipped flag files (installed as `iep.configs`): `iep-train --config=paper/table1/r0.1/iep.cfg`."""
