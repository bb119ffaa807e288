"""Training throughput per target net: batched on-device augmentation vs. per-image PIL (a benchmark, not a test).

    python bench/bench_training.py [--nets 0 7 | all] [--sizes paper quick] [--batch 120] [--steps 3]
                                   [--workers 2] [--device cpu|cuda] [--data_root DIR] [--threads N]

One training step = augment a batch, forward, loss (label smoothing 0.1), backward,
SGD step (Nesterov, the paper's parameter groups), as diam.training.train_target_net
does. Two pipelines feed the same net with the same batch size:

  batched   the project's: uint8 pool tensor on the device, a random batch of
            indices, diam.augment.train_transform on the whole batch.
  pil       per image in a torch DataLoader: PIL grayscale -> RGB,
            RandomResizedCrop(size, scale=(0.08, 1)), RandomHorizontalFlip,
            ColorJitter(brightness=32/255, saturation=0.5), ToTensor,
            Normalize(ImageNet mean/std); the collated batch goes to the device.

Timing: per-step wall clock after warm-up (on CUDA after torch.cuda.synchronize());
img/s and 'vs batched' come from the mean step, since a DataLoader that cannot keep
up shows as a few long waits among fast steps, which a median hides (on an H100, net 0
at 224 px: median 0.043 s, max 0.441 s over 3 steps). When the PIL work of one batch,
spread over the workers, takes at least a quarter of a batched step, the DataLoader
may be the bottleneck, and it gets extra warm-up steps, as many as it prefetches
(workers x prefetch factor), so that the timed steps do not eat batches it prepared
before timing began; otherwise its queue is full after the first warm-up step either
way and no extra steps are spent. 'aug ms' is the augmentation alone for
one batch (median of --aug_repeats): batched on the device, PIL serially in this
process, i.e. the CPU time the DataLoader's workers must find per batch.

On CUDA both pipelines use channels_last, as diam.training does; both compute in fp32
(TF32 on CUDA) unless --bf16 turns on bf16 autocast, as the scripts' --bf16 does.
"""
import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

# Runs as a plain script from any directory: make the `diam` package importable.
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from diam import models  # noqa: E402
from diam.augment import BRIGHTNESS, IMAGENET_MEAN, IMAGENET_STD, train_transform  # noqa: E402
from diam.data import load_dataset  # noqa: E402
from diam.errors import UserError  # noqa: E402
from diam.presets import PRESETS  # noqa: E402
from diam.settings import read_environment  # noqa: E402
from machine import cpu_model, device_line, load_average_lines, net_ids, shown, torch_device  # noqa: E402
from diam.training import autocast, parameter_groups, to_device, to_input_layout  # noqa: E402

PAPER = PRESETS["paper"]
SEED = 0


# ------------------------------------------------------------ data

def pick_data_root(given):
    """--data_root, else $DIAM_DATA_ROOT, else the project's ./data."""
    if given:
        return Path(given)
    if os.environ.get("DIAM_DATA_ROOT"):
        return Path(os.environ["DIAM_DATA_ROOT"])
    return REPO / "data"


def load_pool(data_root: Path):
    """Fashion-MNIST's train split when the root has it, else scikit-learn's digits (embedded)."""
    try:
        data = load_dataset("fmnist", data_root, cache=read_environment().cache)
        return data, f"fmnist (real Fashion-MNIST from {shown(data_root)}, pool {len(data.pool_labels)})"
    except UserError:
        data = load_dataset("digits")
        return data, (f"digits (scikit-learn, 8x8; no Fashion-MNIST under {shown(data_root)}), "
                      f"pool {len(data.pool_labels)}")


class PILDataset(torch.utils.data.Dataset):
    """Per-image torchvision pipeline on a uint8 (N, H, W) pool."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, size: int):
        from torchvision import transforms as T

        self.images = images.numpy()
        self.labels = labels.numpy()
        self.transform = T.Compose([
            T.RandomResizedCrop(size, scale=(0.08, 1.0)),
            T.RandomHorizontalFlip(),
            T.ColorJitter(brightness=BRIGHTNESS, saturation=0.5),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        image = Image.fromarray(self.images[i]).convert("RGB")
        return self.transform(image), int(self.labels[i])


def _seed_worker(worker_id: int) -> None:
    import random

    random.seed(torch.initial_seed() % 2**32)


# ------------------------------------------------------------ one training step

class Trainer:
    """A target net with the paper's optimiser and loss; `step(x, y)` is one SGD step."""

    def __init__(self, net_id: int, n_classes: int, device: torch.device, bf16: bool):
        torch.manual_seed(SEED)
        self.device, self.bf16 = device, bf16
        self.net = to_device(models.build_net(net_id, n_classes, PAPER.dropout), device)
        self.net.train()
        self.optimizer = torch.optim.SGD(parameter_groups(self.net, PAPER.weight_decay), lr=PAPER.lr,
                                         momentum=PAPER.momentum, nesterov=True)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=PAPER.label_smoothing)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x = to_input_layout(x)
        with autocast(self.device, self.bf16):
            loss = self.criterion(self.net(x).float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(device, batches, step, warmup: int, steps: int) -> list[float]:
    """Per-step wall-clock seconds of `step(next batch)` for `steps` steps after `warmup` ones."""
    times = []
    for i in range(warmup + steps):
        sync(device)
        start = time.perf_counter()
        x, y = next(batches)
        step(x, y)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def batched_batches(pool_images, pool_labels, size: int, batch: int, device):
    """The project's pipeline: random indices on the device, one train_transform per batch."""
    generator = torch.Generator(device=device).manual_seed(SEED)
    n = len(pool_labels)
    while True:
        idx = torch.randint(n, (batch,), device=device, generator=generator)
        yield train_transform(pool_images[idx], size, generator, crop_scale_min=0.08), pool_labels[idx]


def pil_loader(dataset: PILDataset, batch: int, n_batches: int, workers: int, prefetch: int, device):
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=batch * n_batches,
                                             generator=torch.Generator().manual_seed(SEED))
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch, sampler=sampler, num_workers=workers, drop_last=True,
        pin_memory=device.type == "cuda", worker_init_fn=_seed_worker if workers else None,
        prefetch_factor=prefetch if workers else None)


def pil_batches(loader, device):
    for x, y in loader:
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def time_augmentation_only(pool_images, dataset: PILDataset, size: int, batch: int, device, repeats: int):
    """Median ms to augment one batch: batched on the device, and PIL serially in this process."""
    generator = torch.Generator(device=device).manual_seed(SEED)
    n = len(dataset)
    batched, pil = [], []
    for r in range(repeats + 1):  # the first of each is a warm-up
        idx = torch.randint(n, (batch,), device=device, generator=generator)
        sync(device)
        start = time.perf_counter()
        train_transform(pool_images[idx], size, generator, crop_scale_min=0.08)
        sync(device)
        if r:
            batched.append(time.perf_counter() - start)
        cpu_idx = idx.cpu().tolist()
        start = time.perf_counter()
        torch.stack([dataset[i][0] for i in cpu_idx])
        if r:
            pil.append(time.perf_counter() - start)
    return 1000 * statistics.median(batched), 1000 * statistics.median(pil)


# ------------------------------------------------------------ report

def machine_description(device: torch.device, threads: int) -> list[str]:
    cpu = cpu_model()
    import torchvision
    import PIL

    lines = [f"machine: {cpu}, {os.cpu_count()} logical CPUs; torch intra-op threads {threads}",
             f"python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
             f"Pillow {PIL.__version__}",
             device_line(device)]
    return lines + load_average_lines()


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--nets", nargs="+", default=["0", "7"],
                   help="net ids 0..11, or 'all' (default: 0 7, the largest and smallest input)")
    p.add_argument("--sizes", nargs="+", default=["paper", "quick"], choices=["paper", "quick"],
                   help="paper: each net's OFA input size; quick: the quick preset's image size")
    p.add_argument("--batch", type=int, default=PAPER.train_batch, help="training batch (default: 120, the paper's)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per pipeline (default: 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (default: 1; the DataLoader "
                                                          "may add workers x prefetch more, see above)")
    p.add_argument("--workers", type=int, nargs="+", default=[2],
                   help="DataLoader worker counts to measure, each its own row (default: 2)")
    p.add_argument("--prefetch", type=int, default=2, help="DataLoader prefetch factor (default: 2)")
    p.add_argument("--aug_repeats", type=int, default=3, help="repeats of the augmentation-only timing")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (default: fp32, TF32 on CUDA)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads in this process; 0 = torch's own choice (default: 1, so that "
                        "the DataLoader's workers are not fighting the training threads for the cores, and "
                        "a shared machine's busy cores do not stall multi-threaded kernels)")
    p.add_argument("--data_root", default=None,
                   help="folder holding FashionMNIST/raw (default: $DIAM_DATA_ROOT, else ./data)")
    args = p.parse_args()
    try:
        args.nets = net_ids(args.nets)
    except ValueError as err:
        p.error(f"--nets: {err}")
    if args.batch < 2 or args.steps < 1 or args.warmup < 0 or args.prefetch < 1 or args.aug_repeats < 1 \
            or min(args.workers) < 0:
        p.error("--batch >= 2, --steps >= 1, --warmup >= 0, --prefetch >= 1, --aug_repeats >= 1, --workers >= 0")
    return args


def main():
    args = parse_args()
    device = torch_device(args.device, args.threads)
    began = time.perf_counter()
    print("\n".join(machine_description(device, torch.get_num_threads())))
    data, description = load_pool(pick_data_root(args.data_root))
    print(f"data: {description}")
    print(f"precision: {'bf16 autocast' if args.bf16 else 'fp32 (TF32 matmuls on CUDA)'}")
    print(f"batch {args.batch}; {args.steps} timed steps after {args.warmup} warm-up "
          f"(+ workers x prefetch {args.prefetch} for a DataLoader that may be the bottleneck); fresh init (weights do not change the cost)")
    print("img/s from the mean timed step; this machine may be shared, so expect noise\n")
    pool_images = data.pool_images.to(device)
    pool_labels = data.pool_labels.to(device)

    header = (f"{'net':>3} {'size':>4} {'pipeline':<16} {'step s (mean)':>13} {'median':>7} {'min':>7} "
              f"{'max':>7} {'img/s':>8} {'vs batched':>10} {'aug ms/batch':>12}")
    rows = []
    print(header, flush=True)
    for net_id in args.nets:
        sizes = [models.input_size(net_id) if s == "paper" else PRESETS["quick"].image_size for s in args.sizes]
        for size in dict.fromkeys(sizes):
            trainer = Trainer(net_id, data.n_classes, device, args.bf16)
            dataset = PILDataset(data.pool_images, data.pool_labels, size)
            aug_batched_ms, aug_pil_ms = time_augmentation_only(pool_images, dataset, size, args.batch, device,
                                                                args.aug_repeats)
            results = []
            times = time_steps(device, batched_batches(pool_images, pool_labels, size, args.batch, device),
                               trainer.step, args.warmup, args.steps)
            results.append(("batched (device)", times, aug_batched_ms))
            batched_step = statistics.median(times)
            for workers in args.workers:
                may_starve = aug_pil_ms / 1000 / max(workers, 1) >= 0.25 * batched_step
                warmup = args.warmup + (workers * args.prefetch if may_starve else 0)
                loader = pil_loader(dataset, args.batch, warmup + args.steps, workers, args.prefetch, device)
                times = time_steps(device, pil_batches(loader, device), trainer.step, warmup, args.steps)
                results.append((f"PIL, {workers} workers" + ("*" if warmup > args.warmup else ""), times, aug_pil_ms))
            base = statistics.mean(results[0][1])
            for name, times, aug_ms in results:
                mean = statistics.mean(times)
                line = (f"{net_id:>3} {size:>4} {name:<16} {mean:>13.3f} {statistics.median(times):>7.3f} "
                        f"{min(times):>7.3f} {max(times):>7.3f} {args.batch / mean:>8.1f} {base / mean:>10.2f} "
                        f"{aug_ms:>12.1f}")
                rows.append(line)
                print(line, flush=True)
            del trainer, dataset
    print("\n'vs batched' = (batched step time) / (this step time): below 1 means slower than the batched pipeline.")
    print("* = DataLoader given workers x prefetch extra warm-up steps (it may be the bottleneck there).")
    print("'aug ms/batch' = augmentation alone: batched on the device; PIL serially in one process.")
    print(f"total wall time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
