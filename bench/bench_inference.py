"""Time the passes over the unlabeled pool that selection reads, then an entropy selection (a benchmark).

    python bench/bench_inference.py [--device cuda] [--pool 57000] [--nets all] [--repeats 3] [--threads N]

For each target net at its paper input size: one pass of `diam.training.predict`
(eval transform, forward, softmax, copy to the host) over a pool of --pool
synthetic 28 x 28 uint8 images held on the device, as the pipeline holds the real
pool (pixel values do not change the cost). A training run makes this pass once
for the probabilities the uncertainty methods read, and once per late epoch
(K = 10 at paper settings) for the snapshots CAL and DIAM read. Then entropy picks
the paper's batch from the T nets' outputs.

The sum is SPEC section 7's "uncertainty selection, inference included" for T nets
(paper: about 8 min 30 s on one RTX 2080; this project's target on one H100: at
most 30 s for 12 nets over 57,000). On a CPU the default pool is 1,000 images: the
table's images/s says what a whole pool would cost.
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from diam import models  # noqa: E402
from diam.presets import PRESETS  # noqa: E402
from diam.strategies import STRATEGIES, SelectionInputs, SelectionOptions  # noqa: E402
from diam.training import predict, to_device  # noqa: E402
from machine import cpu_model, device_line, load_average_lines, net_ids, torch_device  # noqa: E402

PAPER = PRESETS["paper"]
IMAGE_SIDE = 28  # MNIST, KMNIST and Fashion-MNIST images


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_pass(net, pool, size, batch, device, bf16) -> tuple[float, np.ndarray]:
    """Seconds of one probabilities pass over `pool`, and the probabilities."""
    synchronize(device)
    start = time.perf_counter()
    _, probs, _ = predict(net, pool, size, batch, want_probs=True, bf16=bf16)
    synchronize(device)
    return time.perf_counter() - start, probs


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
    args = p.parse_args()
    try:
        args.nets = net_ids(args.nets)
    except ValueError as err:
        p.error(f"--nets: {err}")
    args.pool = args.pool or (57000 if args.device.startswith("cuda") else 1000)
    if args.pool < 2 or args.batch < 1 or args.query < 1 or args.repeats < 1 or args.threads < 0:
        p.error("--pool >= 2, --batch >= 1, --query >= 1, --repeats >= 1 and --threads >= 0")
    return args


def main():
    args = parse_args()
    device = torch_device(args.device, args.threads)
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs; torch {torch.__version__}, "
          f"intra-op threads {torch.get_num_threads()}")
    print(device_line(device))
    print("\n".join(load_average_lines()))
    print(f"pool passes: {args.pool:,} images of {IMAGE_SIDE}x{IMAGE_SIDE}, batch {args.batch}, each net at its "
          f"paper input size, {'bf16' if args.bf16 else 'fp32'}, median of {args.repeats}; then entropy picks {min(args.query, args.pool):,} "
          f"from T = {len(args.nets)}\n")

    generator = torch.Generator().manual_seed(0)
    pool = torch.randint(0, 256, (args.pool, IMAGE_SIDE, IMAGE_SIDE), dtype=torch.uint8,
                         generator=generator).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    print(f"{'net':>4} {'size':>5} {'pass s (median)':>16} {'min':>8} {'max':>8} {'images/s':>10}", flush=True)
    per_net, outputs = [], []
    for net_id in args.nets:
        size = models.input_size(net_id)
        net = to_device(models.build_net(net_id, 10, PAPER.dropout), device)
        predict(net, pool[:args.batch], size, args.batch, bf16=args.bf16)  # warm-up: kernels, allocator
        times = []
        for _ in range(args.repeats):
            seconds, probs = timed_pass(net, pool, size, args.batch, device, args.bf16)
            times.append(seconds)
        median = statistics.median(times)
        per_net.append(median)
        outputs.append(probs)
        print(f"{net_id:>4} {size:>5} {median:>16.2f} {min(times):>8.2f} {max(times):>8.2f} "
              f"{args.pool / median:>10.0f}", flush=True)
        del net

    inputs = SelectionInputs(args.pool, unlabeled_probs=np.stack(outputs))
    start = time.perf_counter()
    picked = STRATEGIES["entropy"].select(inputs, min(args.query, args.pool), np.random.default_rng(0),
                                          SelectionOptions(str(device)))
    synchronize(device)
    select_seconds = time.perf_counter() - start
    assert len(np.unique(picked)) == min(args.query, args.pool)

    passes = sum(per_net)
    print(f"\npool passes of the {len(args.nets)} nets (sum of medians): {passes:.2f} s")
    print(f"entropy selection from their outputs: {select_seconds:.3f} s")
    print(f"entropy selection with {len(args.nets)} nets, inference included: {passes + select_seconds:.2f} s "
          f"for a pool of {args.pool:,}")
    if device.type == "cuda":
        print(f"peak GPU memory allocated: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
