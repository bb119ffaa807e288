"""Wall clock of one whole active-learning iteration, run through the scripts as a user runs them (a benchmark).

    python bench/bench_iteration.py [--models 2] [--preset quick] [--dataset digits] [--device cpu]
                                    [--repeats 1] [--threads N] [--parallel 1 2] [--gpus 0]
                                    [--work_dir DIR] [--keep]

In a temporary --work_dir: train_net.py trains nets 0..T-1 for iteration 0 (one
call, every net in it), test_multi_models.py tests them (once, as method random:
iteration 0's models are shared by every method), then al_select.py selects the
next batch with each of the 7 methods. Every step is a fresh Python process,
timed from launch to exit. With --repeats R the whole iteration runs R times,
each in a new work_dir, and the table gives the median (and min/max).

Concurrent training: iteration 0 (train T nets, test them) run through
`iter_all.sh` as a user runs it, with PARALLEL=k for each --parallel value k, in a
fresh work_dir each, --repeats times with the k values taking turns. k = 1 is one
process training the nets in turn with torch's default threads; k > 1 is k processes
per device (on the CPU, iter_all.sh gives each an equal share of the cores; on CUDA,
--gpus lists the GPUs, e.g. 0,1).

Start-up overhead: a bare interpreter; each script (train, test, select) called
again, so that it finds its work already done and exits; `import torch`; and the
import every working step pays (`import diam.experiment`: torch, torchvision, ofa,
the project); medians of --startup_repeats.
"""
import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from diam.methods import METHODS  # noqa: E402  (light: no torch)
from diam.presets import DEFAULT_METHODS  # noqa: E402
from machine import cpu_model, load_average_lines, shown  # noqa: E402  (bench/machine.py)


def run_timed(cmd, env) -> tuple[float, str]:
    """Seconds from launch to exit of `cmd` (run in the repository root) and its stdout."""
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        sys.exit(f"step failed (exit {done.returncode}): {' '.join(map(str, cmd))}")
    return seconds, done.stdout + done.stderr


def step_commands(args, work_dir: Path) -> list[tuple[str, list]]:
    """(name, command) of one iteration's steps, in order."""
    py = args.python
    common = ["--dataset", args.dataset, "--preset", args.preset, "--model_num", str(args.models),
              "--device", args.device, "--work_dir", str(work_dir)]
    nets = [str(n) for n in range(args.models)]
    steps = [(f"train_net.py (iter 0, nets {' '.join(nets)})",
              [py, "train_net.py", "--al_iter", "0", "--net_id", *nets, *common]),
             ("test_multi_models.py (T nets)",
              [py, "test_multi_models.py", "--method", "random", "--al_iter", "0", *common])]
    steps += [(f"al_select.py {m}", [py, "al_select.py", "--method", m, "--al_iter", "0", *common])
              for m in args.methods]
    return steps


def iteration(args, work_dir: Path, env) -> list[tuple[str, float, str]]:
    """Run one iteration's steps in `work_dir`; [(step, seconds, last output line)]."""
    out = []
    for name, cmd in step_commands(args, work_dir):
        seconds, text = run_timed(cmd, env)
        lines = [line for line in text.strip().splitlines() if line.strip()]
        out.append((name, seconds, lines[-1] if lines else ""))
        print(f"  {name:<36} {seconds:8.2f} s   {out[-1][2][:110]}", flush=True)
    return out


def loop_iteration0(args, work_dir: Path, parallel: int, env) -> float:
    """Seconds of `PARALLEL=k bash iter_all.sh` running iteration 0 only (train, test)."""
    loop_env = dict(env, PARALLEL=str(parallel), PYTHON=args.python, PRESET=args.preset, DATASETS=args.dataset,
                    METHODS="random", ITERS="0", EXTRA_ARGS=f"--work_dir {work_dir}")
    loop_env.pop("OMP_NUM_THREADS", None)  # k = 1 uses every core; k > 1 shares them out (iter_all.sh)
    gpu_id = "cpu" if args.device == "cpu" else args.gpus
    seconds, text = run_timed(["bash", str(REPO / "iter_all.sh"), gpu_id, str(args.models)], loop_env)
    if "mean top-1" not in text:
        sys.exit(f"iter_all.sh did not test iteration 0 in {work_dir}:\n{text[-2000:]}")
    workers = [line.split("iter_all.sh: ", 1)[1] for line in text.splitlines() if "iter_all.sh: training" in line]
    print(f"  PARALLEL={parallel:<3} {seconds:8.2f} s   {'; '.join(workers) or 'one process, every net in turn'}",
          flush=True)
    return seconds


def startup_costs(args, work_dir: Path, env) -> list[tuple[str, list[float]]]:
    """Seconds of calls that do no work: a bare interpreter, each script finding its outputs, the imports."""
    steps = step_commands(args, work_dir)
    calls = [("bare interpreter (python -c pass)", [args.python, "-c", "pass"])]
    calls += [(f"{steps[i][1][1]}, work already done", steps[i][1]) for i in (0, 1, 2)]
    calls += [("python -c 'import torch'", [args.python, "-c", "import torch"]),
              ("python -c 'import diam.experiment'", [args.python, "-c", "import diam.experiment"])]
    results = []
    for name, cmd in calls:
        _, text = run_timed(cmd, env)  # warms the file cache; a script must say it had nothing to do
        if "work already done" in name and "already" not in text:
            sys.exit(f"expected '{' '.join(map(str, cmd))}' to find its work done, it said: {text.strip()[-300:]}")
        results.append((name, [run_timed(cmd, env)[0] for _ in range(args.startup_repeats)]))
    return results


def machine_description(env) -> list[str]:
    cpu = cpu_model()
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__, torch.get_num_threads())"],
                           env=env, capture_output=True, text=True).stdout.split()
    torch_version, threads = (probe + ["?", "?"])[:2]
    lines = [f"machine: {cpu}, {os.cpu_count()} logical CPUs; python {platform.python_version()}, "
             f"torch {torch_version}, intra-op threads in the scripts {threads}"]
    return lines + load_average_lines()


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--models", type=int, default=2, help="T, the number of target nets (default: 2)")
    p.add_argument("--preset", default="quick", help="the scripts' --preset (default: quick)")
    p.add_argument("--dataset", default="digits", help="the scripts' --dataset (default: digits, embedded)")
    p.add_argument("--device", default="cpu", help="the scripts' --device (default: cpu)")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                   help="selection methods (default: the paper's 7)")
    p.add_argument("--repeats", type=int, default=1, help="whole iterations, each in a fresh work_dir (default: 1)")
    p.add_argument("--startup_repeats", type=int, default=3, help="repeats of each start-up measurement")
    p.add_argument("--threads", type=int, default=None,
                   help="set OMP_NUM_THREADS for the scripts (default: leave the environment as it is)")
    p.add_argument("--parallel", type=int, nargs="*", default=[1, 2],
                   help="PARALLEL values for iteration 0 through iter_all.sh (default: 1 2; none: skip)")
    p.add_argument("--gpus", default="0", help="iter_all.sh's GPU_ID with --device cuda (default: 0; e.g. 0,1)")
    p.add_argument("--work_dir", default=None, help="parent of the run folders (default: a new temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the run folders")
    p.add_argument("--python", default=sys.executable, help="interpreter for the scripts (default: this one)")
    args = p.parse_args()
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    if args.models < 1 or args.repeats < 1 or args.startup_repeats < 1 or any(k < 1 for k in args.parallel):
        p.error("--models, --repeats, --startup_repeats and --parallel must be positive")
    return args


def main():
    args = parse_args()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    parent = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="diam_bench_iter_"))
    parent.mkdir(parents=True, exist_ok=True)
    print("\n".join(machine_description(env)))
    print(f"one AL iteration: preset {args.preset}, dataset {args.dataset}, T = {args.models}, device {args.device}, "
          f"{args.repeats} repeat(s); scripts run as subprocesses of {shown(args.python)}")
    print("the machine may be shared (other jobs running): expect noisy wall-clock times\n")

    began = time.perf_counter()
    runs = []
    for r in range(args.repeats):
        work_dir = parent / f"repeat{r}"
        print(f"repeat {r + 1}/{args.repeats} in {work_dir}", flush=True)
        start = time.perf_counter()
        runs.append(iteration(args, work_dir, env))
        print(f"  {'iteration total':<36} {time.perf_counter() - start:8.2f} s\n", flush=True)
    loop_times = []
    if args.parallel:
        print(f"iteration 0 (train {args.models} nets, test) through iter_all.sh, by PARALLEL", flush=True)
        runs_by_k = {k: [] for k in args.parallel}
        for r in range(args.repeats):  # the k values take turns, so a change in load hits them alike
            for k in args.parallel:
                runs_by_k[k].append(loop_iteration0(args, parent / f"parallel{k}-repeat{r}", k, env))
        loop_times = list(runs_by_k.items())
        print()
    startup = startup_costs(args, parent / "repeat0", env)
    if not args.keep and not args.work_dir:
        shutil.rmtree(parent, ignore_errors=True)

    names = [name for name, _, _ in runs[0]]
    per_step = {name: [run[i][1] for run in runs] for i, name in enumerate(names)}
    totals = [sum(s for _, s, _ in run) for run in runs]
    print(f"{'step':<40} {'wall s (median)':>15} {'min':>8} {'max':>8}   in-script selection time (last run)")
    for i, name in enumerate(names):
        times = per_step[name]
        m = re.search(r" in ([0-9.]+)s:", runs[-1][i][2])
        inner = f"{m.group(1)} s" if m else ""
        print(f"{name:<40} {statistics.median(times):>15.2f} {min(times):>8.2f} {max(times):>8.2f}   {inner}")
    print(f"{'sum of the steps (one iteration)':<40} {statistics.median(totals):>15.2f} {min(totals):>8.2f} "
          f"{max(totals):>8.2f}")
    selects = [statistics.median(per_step[n]) for n in names if n.startswith("al_select.py")]
    print(f"{'  of which the 7 al_select.py calls' if len(selects) == 7 else '  of which al_select.py calls':<40} "
          f"{sum(selects):>15.2f}")
    if loop_times:
        print(f"\niteration 0 through iter_all.sh (train {args.models} nets + test)")
        base = statistics.median(loop_times[0][1])
        for k, times in loop_times:
            median = statistics.median(times)
            print(f"{f'PARALLEL={k}':<40} {median:>15.2f} {min(times):>8.2f} {max(times):>8.2f}   "
                  f"x{base / median:.2f} vs PARALLEL={loop_times[0][0]}")
    print(f"\nstart-up overhead (median of {args.startup_repeats})")
    for name, times in startup:
        print(f"{name:<40} {statistics.median(times):>15.2f} {min(times):>8.2f} {max(times):>8.2f}")
    print(f"\ntotal benchmark wall time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
