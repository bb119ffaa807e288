"""Test the T target nets of one iteration and write performances.txt (T rows "top1 top5").

    python test_multi_models.py --dataset digits --method random --al_iter 0 --model_num 1 --preset quick
"""
from diam import cli
from diam.errors import run_cli
from diam.paths import refuse_paper_results


def main():
    p = cli.parser(__doc__.splitlines()[0])
    p.add_argument("--results_dir", default=None,
                   help="root of the results tree (default: <work_dir>/<preset>/extracted_results)")
    args = p.parse_args()
    paths = cli.run_paths(args, args.results_dir)
    refuse_paper_results(paths.results_root)
    if not args.redo and cli.finished(paths.performances(args.model_num, args.method, args.al_iter)):
        return
    from diam.experiment import Run, test_step  # loads torch: only when there is work to do

    print(test_step(Run(args, results_dir=args.results_dir)))


if __name__ == "__main__":
    run_cli(main)
