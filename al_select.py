"""Select the next batch of examples to label with one of the query strategies.

    python al_select.py --method DIAM --dataset digits --al_iter 0 --model_num 2 --preset quick
    python al_select.py --method DIAM_qp --DIAMq 1.0 --dataset digits --al_iter 0 --model_num 2 --preset quick
    python al_select.py --method lewis_oneshot --dataset digits --al_iter 0 --model_num 2 --preset quick  (docs/lewis.md)
"""
from diam import cli
from diam.errors import run_cli


def main():
    cli.run_select(cli.select_args(description=__doc__.splitlines()[0]))


if __name__ == "__main__":
    run_cli(main)
