"""The whole quick grid three ways on one machine, in one run: iter_all.sh, iter_all.sh PARALLEL=2, run_grid.py (a benchmark).

    python bench/bench_grid.py [--models 2] [--dataset digits] [--methods ...] [--seed 0]
                               [--work_dir DIR] [--keep] [preset overrides, e.g. --epochs 2 --pool_size 300]

The grid is one dataset, one T, the methods (default: all seven) and one seed at the
quick preset, every iteration, each run in a fresh work dir, timed from launch to exit:

  iter_all.sh             one process per step, the T nets trained in turn; on the CPU it gives that
                          process every core (OMP_NUM_THREADS is unset for it)
  iter_all.sh PARALLEL=2  the T nets of an iteration in 2 processes, an equal share of the cores each
  run_grid.py             a local Ray with every core, one worker per core (one torch thread each):
                          chains side by side, imports once per worker

The figure of merit is the ratio of wall times (target: run_grid.py at least 2x faster
than sequential iter_all.sh on 2 cores). Every run must test every iteration of every
method; their files are compared too (equal where the torch thread counts are).
Unknown flags (preset overrides) go to every step of all three runs.
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from diam.presets import DEFAULT_METHODS, preset_from_args  # noqa: E402  (light: no torch)
from machine import cpu_model, load_average_lines, shown  # noqa: E402  (bench/machine.py)


def run_timed(name: str, cmd: list, env: dict, log: Path) -> float:
    """Seconds from launch to exit of `cmd` in the repository root; its output goes to `log`."""
    print(f"{name}: {' '.join(map(shown, cmd))}  (output: {shown(log)})", flush=True)
    start = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{name} failed (exit {done.returncode}); see {log}:\n{log.read_text()[-3000:]}")
    print(f"  {seconds:.1f} s", flush=True)
    return seconds


def iter_all(args, extra, work_dir: Path, parallel: int, log: Path) -> float:
    env = dict(os.environ, PARALLEL=str(parallel), PYTHON=sys.executable, PRESET="quick", DATASETS=args.dataset,
               METHODS=" ".join(args.methods), SEEDS=str(args.seed),
               EXTRA_ARGS=" ".join([*extra, "--work_dir", str(work_dir)]))
    env.pop("OMP_NUM_THREADS", None)  # iter_all.sh shares the cores out itself, as a user runs it
    return run_timed(f"iter_all.sh PARALLEL={parallel}", ["bash", "iter_all.sh", "cpu", str(args.models)], env, log)


def run_grid(args, extra, work_dir: Path, log: Path) -> float:
    cmd = [sys.executable, "run_grid.py", "--preset", "quick", "--datasets", args.dataset, "--model_nums",
           str(args.models), "--methods", *args.methods, "--seeds", str(args.seed), *extra, "--work_dir", str(work_dir)]
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)  # each worker sets its own (one thread)
    return run_timed("run_grid.py", cmd, env, log)


def results_digest(work_dir: Path) -> dict:
    """{relative path: sha256} of what a run wrote (lock files, logs and killed writes' temp files aside)."""
    return {str(p.relative_to(work_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(work_dir.rglob("*"))
            if p.is_file() and not p.name.endswith((".lock", ".tmp")) and "logs" not in p.relative_to(work_dir).parts}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__)
    p.add_argument("--models", type=int, default=2, help="T (default: 2)")
    p.add_argument("--dataset", default="digits", help="default: digits (embedded, offline)")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), help="default: the paper's seven")
    p.add_argument("--seed", type=int, default=0, help="the repeat (default: 0)")
    p.add_argument("--work_dir", default=None, help="parent of the three run folders (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the run folders")
    args, extra = p.parse_known_args()
    preset = preset_from_args(argparse.Namespace(preset="quick", **vars(_overrides(extra))))
    return args, extra, preset


def _overrides(extra):
    """The preset overrides among the unknown flags, to say what the grid is."""
    from diam.presets import add_preset_arguments

    p = argparse.ArgumentParser(add_help=False)
    add_preset_arguments(p)
    known, _ = p.parse_known_args(extra)
    del known.preset
    return known


def main():
    args, extra, preset = parse_args()
    parent = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="diam_bench_grid_"))
    parent.mkdir(parents=True, exist_ok=True)
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs; python {sys.version.split()[0]}")
    print("\n".join(load_average_lines()))
    steps = args.models + len(args.methods) * (preset.al_iters + (preset.al_iters - 1) * (1 + args.models))
    print(f"grid: quick preset{' with ' + ' '.join(extra) if extra else ''}, {args.dataset}, T = {args.models}, "
          f"{len(args.methods)} methods, seed {args.seed}, {preset.al_iters} iterations, {preset.epochs} epochs: "
          f"{steps} steps (one per trained net)\n", flush=True)

    began = time.perf_counter()
    folders = {name: parent / name for name in ("sequential", "parallel2", "grid")}
    seconds = {"iter_all.sh": iter_all(args, extra, folders["sequential"], 1, parent / "sequential.log"),
               "iter_all.sh PARALLEL=2": iter_all(args, extra, folders["parallel2"], 2, parent / "parallel2.log"),
               "run_grid.py": run_grid(args, extra, folders["grid"], parent / "grid.log")}
    digests = {name: results_digest(folder) for name, folder in folders.items()}
    expected = len(args.methods) * preset.al_iters
    finished = {name: sum(path.endswith("performances.txt") for path in digest) for name, digest in digests.items()}
    if any(count != expected for count in finished.values()):
        sys.exit(f"a run did not test every iteration of every method (expected {expected}): {finished}")

    base = seconds["iter_all.sh"]
    print(f"\n{'run':<24} {'wall s':>8} {'speed-up vs iter_all.sh':>24}")
    for name, wall in seconds.items():
        print(f"{name:<24} {wall:>8.1f} {base / wall:>23.2f}x")
    print(f"run_grid.py vs iter_all.sh PARALLEL=2: {seconds['iter_all.sh PARALLEL=2'] / seconds['run_grid.py']:.2f}x")
    print("target: run_grid.py at least 2x faster than sequential iter_all.sh on 2 cores")
    for name in ("parallel2", "sequential"):
        differ = sorted(path for path in set(digests["grid"]) | set(digests[name])
                        if digests["grid"].get(path) != digests[name].get(path))
        print(f"run_grid.py's files vs {name}'s: " + (f"identical ({len(digests['grid'])} files)" if not differ else
              f"{len(differ)} of {len(digests['grid'])} differ, e.g. {differ[0]}"))
    print("(bit for bit needs the same torch threads in every step; iter_all.sh gives its test and select steps, and "
          "its one training process without PARALLEL, every core)")
    print(f"\ntotal benchmark wall time {time.perf_counter() - began:.0f} s")
    if not args.keep and not args.work_dir:
        shutil.rmtree(parent, ignore_errors=True)


if __name__ == "__main__":
    main()
