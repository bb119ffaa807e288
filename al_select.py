"""Select the next batch of examples to label with one of the query strategies.

    python al_select.py --method DIAM --dataset digits --al_iter 0 --model_num 2 --preset quick
"""
from diam import cli
from diam.errors import run_cli


def main():
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--batch_size", type=int, default=None,
                   help="examples to select (default: the preset's query batch, 1500 in the paper)")
    args = p.parse_args()
    if args.batch_size is not None and args.batch_size <= 0:
        p.error("--batch_size must be positive")
    paths = cli.run_paths(args)
    if not args.redo and cli.finished(paths.indices(args.model_num, args.method, args.al_iter + 1)):
        return
    from diam.experiment import Run, select_step  # loads torch: only when there is work to do

    print(select_step(Run(args), args.batch_size))


if __name__ == "__main__":
    run_cli(main)
