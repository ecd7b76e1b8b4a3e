"""MariaDB: the soak (MARIADB_SOAK_SECONDS, default 15) and the two-instance race on MariaDB.

    python3 reliability/scenario_mariadb.py
"""

import os
import sys

import scenario_instances
from scenario_soak import soak

if __name__ == "__main__":
    ok = soak("mysql", float(os.environ.get("MARIADB_SOAK_SECONDS", "15")))
    ok = scenario_instances.main("mysql") and ok
    sys.exit(0 if ok else 1)
