"""Select the next batch of examples to label with one of the query strategies.

    python al_select.py --method DIAM --dataset digits --al_iter 0 --model_num 2 --preset quick
    python al_select.py --method DIAM_qp --DIAMq 1.0 --dataset digits --al_iter 0 --model_num 2 --preset quick
"""
import argparse
import math

from diam import cli
from diam.errors import run_cli
from diam.presets import DIAM_QP_Q


def main():
    # --DIAMq is DIAM_qp's own setting; the flags every selection shares are diam.cli's.
    diam_qp_flags = argparse.ArgumentParser(add_help=False)
    diam_qp_flags.add_argument("--DIAMq", type=float, default=DIAM_QP_Q)
    known, rest = diam_qp_flags.parse_known_args()
    args = cli.select_args(rest, description=f"{__doc__.splitlines()[0]} DIAM_qp also takes --DIAMq Q, the weight "
                                             f"of the disagreement score against diversity (default {DIAM_QP_Q}).")
    if not (math.isfinite(known.DIAMq) and known.DIAMq >= 0):
        diam_qp_flags.error("--DIAMq must be a finite number >= 0")
    args.DIAMq = known.DIAMq
    cli.run_select(args)


if __name__ == "__main__":
    run_cli(main)
