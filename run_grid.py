"""Run the experiment grid (datasets x T x methods x seeds) on Ray: this machine's cores, or a cluster.

    python run_grid.py --preset quick --datasets digits --model_nums 2 --methods random DIAM --seeds 0 1

It runs exactly the steps of iter_all.sh, in long-lived workers (torch and ofa are
imported once per worker): iteration 0 once per dataset and seed, then every
(dataset, T, method, seed) chain; chains run side by side, and an iteration's T
nets train as parallel tasks. Several machines need the work dir, the data root
and the project on a shared filesystem (see --help and the README).
"""
import sys

from diam.errors import run_cli
from diam.grid import main

if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
