"""Time the passes over the unlabeled pool that selection reads, then an entropy selection (a benchmark).

    python bench/bench_inference.py [--device cuda] [--pool 57000] [--nets all] [--repeats 3] [--threads N]
                                    [--forwards plain fused [graphs]] [--image_size 32] [--clock wall|cpu]

For each target net at its paper input size (or --image_size): one pass of
`diam.training.predict` (eval transform, forward, softmax, copy to the host) over a
pool of --pool synthetic 28 x 28 uint8 images held on the device, as the pipeline
holds the real pool (pixel values do not change the cost), with each forward of
--forwards: `plain` (the net as trained), `fused` (the inference copy every pass runs
by default: BatchNorm folded, torch's hardswish, kernels cropped to their inputs;
diam/inference.py) and, on CUDA, `graphs` (fused, replayed from a CUDA graph). The
forwards take turns in each repeat, in a shuffled order, so drifting load hits all of
them alike; the table gives each one's median images/s and fused's ratio to plain.
A training run makes this pass once for the probabilities the uncertainty methods
read, and once per late epoch (K = 10 at paper settings) for the snapshots CAL and
DIAM read. Then entropy picks the paper's batch from the T nets' outputs (the
default forward's).

The sum is SPEC section 7's "uncertainty selection, inference included" for T nets
(paper: about 8 min 30 s on one RTX 2080; this project's target on one H100: at
most 30 s for 12 nets over 57,000). On a CPU the default pool is 1,000 images: the
table's images/s says what a whole pool would cost.
"""
import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from diam import models  # noqa: E402
from diam.presets import PRESETS  # noqa: E402
from diam.methods import METHODS  # noqa: E402
from diam.pool import Pool  # noqa: E402
from diam.cuda_graphs import ScoringGraphs  # noqa: E402
from diam.speed import Speed  # noqa: E402
from diam.training import predict, to_device  # noqa: E402
from machine import cpu_model, device_line, load_average_lines, net_ids, torch_device  # noqa: E402

PAPER = PRESETS["paper"]
IMAGE_SIDE = 28  # MNIST, KMNIST and Fashion-MNIST images


FORWARDS = {"plain": Speed(scoring="plain"), "fused": Speed(), "graphs": Speed(scoring_graphs=True)}
DEFAULT_FORWARD = "fused"  # what every pass runs unless DIAM_SCORING=plain


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(kind: str) -> float:
    """wall: elapsed time. cpu: this process's CPU time, steadier on a loaded machine (what the pass
    computes, not what it waited for); not for CUDA, whose work runs off the CPU."""
    return time.perf_counter() if kind == "wall" else time.process_time()


def timed_pass(net, pool, size, batch, device, bf16, speed, graphs, clock_kind) -> tuple[float, np.ndarray]:
    """Seconds of one probabilities pass over `pool`, and the probabilities."""
    synchronize(device)
    start = clock(clock_kind)
    _, probs, _ = predict(net, pool, size, batch, want_probs=True, bf16=bf16, speed=speed, graphs=graphs)
    synchronize(device)
    return clock(clock_kind) - start, probs


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (default: fp32, TF32 on CUDA)")
    p.add_argument("--pool", type=int, default=None,
                   help="unlabeled pool size (default: 57,000 on cuda, the paper's; 1,000 on the cpu)")
    p.add_argument("--nets", nargs="+", default=["all"], help="net ids 0..11, or 'all' (default)")
    p.add_argument("--batch", type=int, default=PAPER.eval_batch,
                   help=f"inference batch (default: {PAPER.eval_batch}, the presets' eval_batch)")
    p.add_argument("--query", type=int, default=PAPER.query_batch,
                   help=f"examples entropy selects (default: {PAPER.query_batch}, the paper's batch)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per net; the table gives the median")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads; 0 = torch's own choice (default)")
    p.add_argument("--forwards", nargs="+", default=None, choices=sorted(FORWARDS),
                   help="forwards to time (default: plain fused, and graphs on cuda)")
    p.add_argument("--image_size", type=int, default=None, help="every net at this input size (default: its own)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall time (default) or the process's CPU time (steadier on a loaded CPU machine)")
    args = p.parse_args()
    try:
        args.nets = net_ids(args.nets)
    except ValueError as err:
        p.error(f"--nets: {err}")
    cuda = args.device.startswith("cuda")
    args.pool = args.pool or (57000 if cuda else 1000)
    if args.pool < 2 or args.batch < 1 or args.query < 1 or args.repeats < 1 or args.threads < 0:
        p.error("--pool >= 2, --batch >= 1, --query >= 1, --repeats >= 1 and --threads >= 0")
    if args.image_size is not None and args.image_size < 8:
        p.error("--image_size must be at least 8")
    args.forwards = args.forwards or (["plain", "fused", "graphs"] if cuda else ["plain", "fused"])
    if "graphs" in args.forwards and not cuda:
        p.error("--forwards graphs needs --device cuda (CUDA graphs)")
    if args.clock == "cpu" and cuda:
        p.error("--clock cpu measures CPU work: use the wall clock on cuda")
    return args


def main():
    args = parse_args()
    device = torch_device(args.device, args.threads)
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs; torch {torch.__version__}, "
          f"intra-op threads {torch.get_num_threads()}")
    print(device_line(device))
    print("\n".join(load_average_lines()))
    sizes = "each net at its paper input size" if args.image_size is None else f"every net at {args.image_size} px"
    print(f"pool passes: {args.pool:,} images of {IMAGE_SIDE}x{IMAGE_SIDE}, batch {args.batch}, {sizes}, "
          f"{'bf16' if args.bf16 else 'fp32'}, median of {args.repeats} ({args.clock} clock); forwards: "
          f"{', '.join(args.forwards)}; then entropy picks {min(args.query, args.pool):,} from T = {len(args.nets)}\n")

    generator = torch.Generator().manual_seed(0)
    pool = torch.randint(0, 256, (args.pool, IMAGE_SIDE, IMAGE_SIDE), dtype=torch.uint8,
                         generator=generator).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    header = "".join(f"{name + ' img/s':>14}" for name in args.forwards)
    compare = "plain" in args.forwards and DEFAULT_FORWARD in args.forwards
    print(f"{'net':>4} {'size':>5}{header}" + (f" {'fused/plain':>12} {'labels same':>12}" if compare else ""),
          flush=True)
    order = random.Random(0)
    per_net, outputs, slower = [], [], []
    for net_id in args.nets:
        size = args.image_size or models.input_size(net_id)
        net = to_device(models.build_net(net_id, 10, PAPER.dropout), device)
        models.initialise(net, net_id)
        graphs = {name: ScoringGraphs() if FORWARDS[name].scoring_graphs else None for name in args.forwards}
        for name in args.forwards:  # warm-up: kernels, allocator, the graph's recording
            predict(net, pool[:args.batch], size, args.batch, bf16=args.bf16, speed=FORWARDS[name],
                    graphs=graphs[name])
        times, probs = {name: [] for name in args.forwards}, {}
        for _ in range(args.repeats):
            for name in order.sample(args.forwards, len(args.forwards)):
                seconds, probs[name] = timed_pass(net, pool, size, args.batch, device, args.bf16, FORWARDS[name],
                                                  graphs[name], args.clock)
                times[name].append(seconds)
        median = {name: statistics.median(t) for name, t in times.items()}
        used = DEFAULT_FORWARD if DEFAULT_FORWARD in median else args.forwards[0]
        per_net.append(median[used])
        outputs.append(probs[used])
        line = f"{net_id:>4} {size:>5}" + "".join(f"{args.pool / median[name]:>14.0f}" for name in args.forwards)
        if compare:
            ratio = median["plain"] / median[DEFAULT_FORWARD]
            same = np.mean(probs["plain"].argmax(1) == probs[DEFAULT_FORWARD].argmax(1))
            line += f" {ratio:>11.2f}x {100 * same:>11.2f}%"
            if ratio < 1:
                slower.append(net_id)
        print(line, flush=True)
        del net, graphs

    inputs = Pool(args.pool, str(device), unlabeled_probs=np.stack(outputs))
    start = time.perf_counter()
    picked = METHODS["entropy"].select(inputs, min(args.query, args.pool), np.random.default_rng(0),
                                       METHODS["entropy"].settings())
    synchronize(device)
    select_seconds = time.perf_counter() - start
    assert len(np.unique(picked)) == min(args.query, args.pool)

    passes = sum(per_net)
    if compare:
        print(f"\nthe forward the passes use by default ({DEFAULT_FORWARD}) was slower than plain on: "
              f"{', '.join(f'net {n}' for n in slower) if slower else 'no net'}")
    print(f"\npool passes of the {len(args.nets)} nets with the {used} forward (sum of medians): {passes:.2f} s")
    print(f"entropy selection from their outputs: {select_seconds:.3f} s")
    print(f"entropy selection with {len(args.nets)} nets, inference included: {passes + select_seconds:.2f} s "
          f"for a pool of {args.pool:,}")
    if device.type == "cuda":
        print(f"peak GPU memory allocated: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
