"""Train target nets for one active-learning iteration.

    python train_net.py --net_id 0 --dataset digits --al_iter 0 --method random --model_num 1 --preset quick

--net_id takes one id, as in the original, or several (trained one after the other
in one process, which saves start-up time on small runs).
"""
from diam import cli
from diam.errors import run_cli


def main():
    p = cli.parser(__doc__.splitlines()[0], method_required=False)
    p.add_argument("--net_id", type=int, nargs="+", required=True, help="target net(s), 0..11 (SPEC section 2)")
    p.add_argument("--mDIS", action="store_true", help="record late-epoch snapshots whatever the method")
    p.add_argument("--DIS_frac", dest="dis_frac", type=float, default=None,
                   help="share of the last epochs that leave snapshots (default: the preset's, 0.5)")
    args = p.parse_args()
    if args.method is None:
        if args.al_iter != 0:
            p.error("--method is required after iteration 0 (iteration 0 is shared by all methods)")
        args.method = "random"
    paths = cli.run_paths(args)
    if not args.redo and cli.finished(*(paths.checkpoint(args.model_num, args.method, args.al_iter, n)
                                        for n in args.net_id)):
        return
    from diam.experiment import Run, train_step  # loads torch: only when there is work to do

    run = Run(args)
    for net_id in args.net_id:
        print(train_step(run, net_id, args.mDIS), flush=True)


if __name__ == "__main__":
    run_cli(main)
