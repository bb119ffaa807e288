"""Milliseconds per training step on each speed path, per target net (a benchmark): CUDA graphs, the CPU pieces.

    python bench/bench_step.py --device cuda [--nets all] [--steps 20] [--image_size N] [--batch 120]

For each net at its paper input size (or --image_size): the step of
diam.training.training_step (forward with label smoothing, backward, SGD with
Nesterov momentum on the paper's parameter groups, the cosine rate) on batches
made by the project's on-device augmentation from synthetic 28 x 28 images. Two
steps are timed, each on a fresh net with the same initial weights:

  eager    the default (foreach SGD, its rate set by CosineAnnealingLR)
  graphed  DIAM_CUDA_FAST=training_graphs: fused SGD reading a tensor rate; after
           cuda_graphs.EAGER_STEPS_BEFORE_CAPTURE real steps, one step is recorded and
           every later one replayed (CUDA only)

On the CPU the default step alone, or with --cpu_paths the DIAM_CPU_FAST paths (diam/cpu_fast.py),
each applied to the net as train_target_net applies it:

  plain      the default step
  crop_taps  depthwise taps that meet only padding not computed
  compiled   crop_taps, and the forward and loss through torch.compile
  all        compiled, and convs on 1 x 1 and 2 x 2 inputs as matrix products and shifted sums

    python bench/bench_step.py --cpu_paths --nets 0 7 --image_size 32 --batch 25 --threads 1   # the CPU presets' step

Warm-up steps (the eager ones before the recording, and the recording) are not timed;
then --steps steps are timed together, with the augmentation of each batch, ending on
torch.cuda.synchronize(). The table gives ms per step and the first kind's time over the last's.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from diam import models  # noqa: E402
from diam.augment import train_transform  # noqa: E402
from diam.cpu_fast import apply_cpu_pieces  # noqa: E402
from diam.cuda_graphs import EAGER_STEPS_BEFORE_CAPTURE  # noqa: E402
from diam.presets import PRESETS  # noqa: E402
from diam.speed import Speed  # noqa: E402
from diam.training import to_device, to_input_layout, training_step  # noqa: E402
from machine import cpu_model, device_line, load_average_lines, net_ids, torch_device  # noqa: E402

PAPER = PRESETS["paper"]
POOL = 2048  # synthetic images to draw batches from


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ms_per_step(net_id, size, speed, args, device, pool, labels) -> float:
    torch.manual_seed(0)
    net = to_device(models.build_net(net_id, 10, PAPER.dropout), device)
    models.initialise(net, net_id)
    net.train()
    apply_cpu_pieces(net, size, speed)
    warmup = EAGER_STEPS_BEFORE_CAPTURE + 1 if speed.training_graphs else (5 if speed.compile else 2)
    step = training_step(net, PAPER, warmup + args.steps, speed, device)
    generator = torch.Generator(device=device).manual_seed(0)

    def one_step():
        idx = torch.randint(0, POOL, (args.batch,), device=device, generator=generator)
        x = to_input_layout(train_transform(pool[idx], size, generator, PAPER.crop_scale_min))
        return step(x, labels[idx])

    for _ in range(warmup):
        one_step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = one_step()
    synchronize(device)
    seconds = time.perf_counter() - start
    if not torch.isfinite(loss).item():
        raise FloatingPointError(f"net {net_id}: the loss is not finite")
    return 1000 * seconds / args.steps


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu, eager only)")
    p.add_argument("--nets", nargs="+", default=["all"], help="net ids 0..11, or 'all' (default)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per net and kind (default 20)")
    p.add_argument("--batch", type=int, default=PAPER.train_batch, help=f"default {PAPER.train_batch}")
    p.add_argument("--image_size", type=int, default=None, help="every net at this size (default: its own)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads; 0 = torch's own choice")
    p.add_argument("--cpu_paths", action="store_true",
                   help="on the CPU, time every DIAM_CPU_FAST path, not the default step alone")
    args = p.parse_args()
    try:
        args.nets = net_ids(args.nets)
    except ValueError as err:
        p.error(f"--nets: {err}")
    if args.steps < 1 or args.batch < 2 or args.threads < 0:
        p.error("--steps >= 1, --batch >= 2 and --threads >= 0")
    return args


def main():
    args = parse_args()
    device = torch_device(args.device, args.threads)
    if device.type == "cuda":
        kinds = {"eager": Speed(), "graphed": Speed(training_graphs=True)}
    elif args.cpu_paths:  # each compiled kind compiles first: ~100 s an architecture the first time
        kinds = {"plain": Speed(), "crop_taps": Speed(crop_taps=True),
                 "compiled": Speed(crop_taps=True, compile=True),
                 "all": Speed(crop_taps=True, compile=True, small_convs=True)}
    else:
        kinds = {"eager": Speed()}
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs; torch {torch.__version__}")
    print(device_line(device))
    print("\n".join(load_average_lines()))
    print(f"training steps: batch {args.batch}, fp32{' (TF32)' if device.type == 'cuda' else ''}, "
          f"{args.steps} timed steps per net and kind, augmentation included\n")
    generator = torch.Generator().manual_seed(0)
    pool = torch.randint(0, 256, (POOL, 28, 28), dtype=torch.uint8, generator=generator).to(device)
    labels = torch.randint(0, 10, (POOL,), generator=generator).to(device)
    print(f"{'net':>4} {'size':>5}" + "".join(f"{kind + ' ms':>13}" for kind in kinds)
          + (f"{'speed-up':>10}" if len(kinds) > 1 else ""), flush=True)
    for net_id in args.nets:
        size = args.image_size or models.input_size(net_id)
        ms = {kind: ms_per_step(net_id, size, speed, args, device, pool, labels) for kind, speed in kinds.items()}
        line = f"{net_id:>4} {size:>5}" + "".join(f"{value:>13.1f}" for value in ms.values())
        if len(ms) > 1:
            line += f"{next(iter(ms.values())) / list(ms.values())[-1]:>9.2f}x"
        print(line, flush=True)


if __name__ == "__main__":
    main()
