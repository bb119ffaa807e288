"""Test the T target nets of one iteration and write performances.txt (T rows "top1 top5").

    python test_multi_models.py --dataset digits --method random --al_iter 0 --model_num 1 --preset quick
"""
from diam import cli
from diam.errors import run_cli


def main():
    cli.run_test(cli.test_args(description=__doc__.splitlines()[0]))


if __name__ == "__main__":
    run_cli(main)
