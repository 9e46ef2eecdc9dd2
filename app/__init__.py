"""The web app and the command line: the side of Blindspot Atlas a user runs."""

import os

# torch's OpenMP threads spin-wait between operations by default; on a machine whose cores are busy with other
# work, that made the world model generate 4x slower with 2 threads than with 1 (2.5 vs 10.1 img/s, load 4 on 2
# cores; 10.1 img/s with this setting). Sleeping threads cost nothing measurable when the cores are free. Set
# here, before anything imports torch; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
