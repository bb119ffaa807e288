"""Train target nets for one active-learning iteration.

    python train_net.py --net_id 0 --dataset digits --al_iter 0 --method random --model_num 1 --preset quick

--net_id takes one id, as in the original, or several (trained one after the other
in one process, which saves start-up time on small runs).
"""
from diam import cli
from diam.errors import run_cli


def main():
    cli.run_train(cli.train_args(description=__doc__.splitlines()[0]))


if __name__ == "__main__":
    run_cli(main)
