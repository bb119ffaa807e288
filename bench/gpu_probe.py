"""The machine and whether each API the fast path uses works there (the GPU check's first part).

    python bench/gpu_probe.py [--device cuda]

Prints the Python, torch, CUDA and cuDNN versions and the GPU, then one line per API,
`api NAME: works (...)` or `api NAME: FAILS (...)`, each tried on a small case:

  scoring_graphs    a net's scoring forward recorded and replayed (diam.cuda_graphs.ScoringGraphs),
                    its labels against the eager pass's
  training_graphs   a training step of fused SGD with a tensor rate, recorded and replayed
                    (diam.cuda_graphs.ReplayedStep); BatchNorm must count each step once
  benchmark         torch.backends.cudnn.benchmark on a convolution
  streams           train_net.py training two nets at once with DIAM_CUDA_FAST=all (digits, 1 epoch)
  torch.compile     present or not (not used by the project)

The last line names the DIAM_CUDA_FAST pieces that worked: `pieces that work: a,b,c`.
On the CPU (--device cpu) the CUDA cases are reported as skipped.
"""
import argparse
import dataclasses
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from diam import models  # noqa: E402
from diam.cuda_graphs import EAGER_STEPS_BEFORE_CAPTURE, ScoringGraphs  # noqa: E402
from diam.data import load_dataset  # noqa: E402
from diam.presets import PRESETS  # noqa: E402
from diam.speed import Speed  # noqa: E402
from diam.training import Record, predict, to_device, train_target_net  # noqa: E402

NET = 11  # the smallest net: the probes take seconds
SIZE = 32


def probe(name: str, works: list, attempt) -> None:
    start = time.perf_counter()
    try:
        detail = attempt()
    except Exception as err:  # any failure is the answer: the API does not work here
        print(f"api {name}: FAILS ({type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''})",
              flush=True)
        return
    print(f"api {name}: works ({detail}; {time.perf_counter() - start:.1f} s)", flush=True)
    works.append(name)


def scoring_graphs(device):
    data = load_dataset("digits", pool_size=600)
    images = data.pool_images.to(device)
    torch.manual_seed(0)
    net = to_device(models.build_net(NET), device)
    models.initialise(net, NET)
    eager = predict(net, images, SIZE, 256, want_probs=True)
    graphs = ScoringGraphs()
    replayed = [predict(net, images, SIZE, 256, want_probs=True, graphs=graphs) for _ in range(2)]
    same = min(np.mean(r[0] == eager[0]) for r in replayed)
    gap = max(np.abs(r[1] - eager[1]).max() for r in replayed)
    if same < 0.999:
        raise AssertionError(f"only {100 * same:.2f}% of the replayed labels equal the eager pass's")
    return f"{100 * same:.2f}% of labels equal the eager pass's, probabilities within {gap:.1e}"


def training_graphs(device):
    preset = dataclasses.replace(PRESETS["quick"], epochs=2, pool_size=400, train_batch=20)
    data = load_dataset("digits", pool_size=preset.pool_size).to(device)
    torch.manual_seed(0)
    net = models.build_net(NET, data.n_classes, preset.dropout)
    models.initialise(net, NET)
    n_labeled = 20 * (EAGER_STEPS_BEFORE_CAPTURE + 3)
    train_target_net(net, data, torch.arange(n_labeled), torch.arange(n_labeled, 400, device=device), preset, SIZE,
                     Record(), stream=0, speed=Speed(training_graphs=True))
    steps = preset.epochs * n_labeled // preset.train_batch
    counted = net.first_conv.bn.num_batches_tracked.item()
    if counted != steps:
        raise AssertionError(f"BatchNorm counted {counted} batches for {steps} steps")
    if not all(torch.isfinite(p).all() for p in net.parameters()):
        raise AssertionError("the weights are not finite")
    return f"{steps} steps, BatchNorm counted each once"


def benchmark(device):
    torch.backends.cudnn.benchmark = True
    try:
        conv = torch.nn.Conv2d(16, 16, 3, padding=1).to(device)
        with torch.no_grad():
            conv(torch.randn(8, 16, 32, 32, device=device))
        torch.cuda.synchronize(device)
    finally:
        torch.backends.cudnn.benchmark = False
    return "a convolution ran with it on"


def streams(device):
    with tempfile.TemporaryDirectory() as work:
        env = {**os.environ, "DIAM_CUDA_FAST": "all"}
        result = subprocess.run(
            [sys.executable, str(REPO / "train_net.py"), "--net_id", "10", "11", "--dataset", "digits",
             "--al_iter", "0", "--model_num", "12", "--preset", "quick", "--epochs", "1", "--pool_size", "300",
             "--initial_labeled", "60", "--test_size", "100", "--device", str(device), "--work_dir", work],
            capture_output=True, text=True, env=env, timeout=240)
        if result.returncode != 0:
            raise RuntimeError((result.stderr.strip().splitlines() or ["no message"])[-1])
        trained = sorted(p.name for p in Path(work).rglob("iter0/net*.pt"))
        if trained != ["net10.pt", "net11.pt"]:
            raise AssertionError(f"trained {trained}")
    return "train_net.py trained nets 10 and 11 at once"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--device", default="cuda")
    args = p.parse_args()
    device = torch.device(args.device)
    print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"cuDNN {torch.backends.cudnn.version()}, {os.cpu_count()} CPUs")
    works = []
    if device.type == "cuda":
        if not torch.cuda.is_available():
            sys.exit("PyTorch sees no GPU here")
        props = torch.cuda.get_device_properties(device)
        print(f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, compute capability {props.major}.{props.minor}")
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        for name, attempt in (("scoring_graphs", scoring_graphs), ("training_graphs", training_graphs),
                              ("benchmark", benchmark), ("streams", streams)):
            probe(name, works, lambda: attempt(device))
    else:
        for name in ("scoring_graphs", "training_graphs", "benchmark", "streams"):
            print(f"api {name}: skipped (no CUDA device asked for)")
    compile_state = "present, not used" if hasattr(torch, "compile") else "absent"
    print(f"api torch.compile: {compile_state}")
    print(f"pieces that work: {','.join(works)}", flush=True)


if __name__ == "__main__":
    main()
