"""The experiment grid on Ray: the loop's steps (diam/plan.py), run by long-lived workers on one machine or a cluster.

The plan is iter_all.sh's for every (dataset, T, method, seed) at once, with what each step waits
for; this module only runs it. Each step is done by the same function as its script (diam.cli),
given its arguments as the plan holds them, inside a Ray actor that imported torch and ofa once.
Ray places the actors (CPU threads or a GPU share each) and, when one dies, restarts it and
retries its step; a step skips work whose outputs exist, so a retried step, or a rerun grid,
ends with the same files.

Ray stays in this module: the steps know nothing of it.

With DIAM_PROFILE=DIR each step runs under cProfile (its statistics in DIR, named as its
log) and the driver writes DIR/timeline.tsv: when each step held which worker. That is
what bench/bench_piece.py reads to say where a piece's time goes.
"""
import argparse
import cProfile
import heapq
import logging
import math
import os
import socket
import sys
import time
import traceback
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

from . import cli, plan
from .errors import UserError
from .datasets import DATASETS
from .methods import METHODS
from .paths import write_text
from .plan import Step
from .presets import DEFAULT_METHODS, PAPER_DATASETS, PAPER_MODEL_NUMS

# How often Ray restarts a dead worker and resubmits the step it was running.
RETRIES = 3
# A folder: profile every step and record the grid's timeline there (bench/bench_piece.py).
PROFILE_VARIABLE = "DIAM_PROFILE"


# ---------------------------------------------------------------- the workers
class StepWorker:
    """A long-lived process that runs steps one at a time; torch, torchvision and ofa are imported once."""

    def __init__(self, cwd: str, threads: int, env: dict):
        if not os.path.isdir(cwd):
            raise UserError(f"the folder run_grid.py was started in, {cwd}, does not exist on {socket.gethostname()}. "
                            "Workers on several machines need it, and the work dir, on a shared filesystem "
                            "mounted at the same path everywhere.")
        os.chdir(cwd)  # relative --work_dir and --data_root mean what they mean to the driver
        for name in [name for name in os.environ if name.startswith("DIAM_") and name not in env]:
            del os.environ[name]
        os.environ.update(env)  # the driver's DIAM_* settings (work dir, data root, caches), not this machine's
        import torch
        from threadpoolctl import threadpool_limits

        # As many threads as the cores Ray gave this worker: torch's, and numpy's BLAS.
        torch.set_num_threads(threads)
        self._blas_limit = threadpool_limits(threads)
        from . import experiment  # noqa: F401  (torch, torchvision, ofa: the start-up the grid saves)
        self._profile_dir = os.environ.get(PROFILE_VARIABLE)

    def run(self, step: Step) -> tuple[str, str]:
        """('run' | 'skipped' | 'failed', what went wrong); the step's output goes to its log."""
        if not self._profile_dir:
            return self._run(step)
        profile = cProfile.Profile()
        try:
            return profile.runcall(self._run, step)
        finally:
            profile.dump_stats(profile_path(self._profile_dir, step))

    def _run(self, step: Step) -> tuple[str, str]:
        Path(step.log).parent.mkdir(parents=True, exist_ok=True)
        with open(step.log, "a") as log, redirect_stdout(log), redirect_stderr(log):
            print(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {socket.gethostname()} pid {os.getpid()}: "
                  f"{step.command}", flush=True)
            try:
                did_work = cli.run_step(step)
            except UserError as err:
                print(f"error: {err}")
                return "failed", f"error: {err}"
            except SystemExit as err:  # something in the step chose to exit; keep the worker
                return "failed", f"the step exited (status {err.code}); see the log"
            except Exception as err:  # a bug, or the machine (out of memory, a CUDA fault): keep the grid going
                traceback.print_exc()
                return "failed", f"{type(err).__name__}: {err}"
            return ("run" if did_work else "skipped"), ""


def profile_path(folder, step: Step) -> Path:
    """Where a profiled step's cProfile statistics go: its log's path below the run folder's logs."""
    parts = Path(step.log).parts
    relative = parts[parts.index("logs") + 1:] if "logs" in parts else parts[-1:]
    path = Path(folder, *relative).with_suffix(".prof")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------- the driver
@dataclass
class Summary:
    total: int
    run: int = 0
    skipped: int = 0
    failed: list = field(default_factory=list)  # (step, message)
    seconds: float = 0.0
    workers: int = 0
    busy_seconds: float = 0.0  # summed over workers: how long they held a step (Ray's overhead included)
    timeline: list = field(default_factory=list)  # (step position, worker position, start s, end s, status)

    @property
    def not_reached(self) -> int:
        return self.total - self.run - self.skipped - len(self.failed)


def run_steps(steps: list[Step], workers: list, progress) -> Summary:
    """Run the steps on the workers as their needs are met; a failed step stops its chain only."""
    import ray

    summary = Summary(len(steps), workers=len(workers))
    waiting = [len(step.needs) for step in steps]
    dependents = [[] for _ in steps]
    for i, step in enumerate(steps):
        for need in step.needs:
            dependents[need].append(i)
    ready = []  # a heap of (is a test, position): tests are leaves, training and selection keep chains moving
    idle, running = list(workers), {}  # running: object ref -> (step position, worker, start time)
    began = time.perf_counter()

    def done(i, status, message=""):
        if status == "failed":
            summary.failed.append((steps[i], message))
            return
        setattr(summary, status, getattr(summary, status) + 1)
        for j in dependents[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                make_ready(j)

    def make_ready(i):
        """Queue a step whose needs are met, or count it done when its outputs exist (no worker needed)."""
        try:
            finished = all(p.exists() for p in cli.step_outputs(steps[i]))
        except UserError as err:
            return done(i, "failed", f"error: {err}")
        if finished:
            return done(i, "skipped")
        heapq.heappush(ready, (steps[i].script == plan.TEST, i))

    shown = None

    def show():  # redrawn when something changed, so that a log of it stays short
        nonlocal shown
        now = (summary.run + summary.skipped + len(summary.failed),
               len({steps[i].chain for i, _, _ in running.values()}))
        if now != shown:
            shown = now
            progress.n = now[0]
            progress.set_postfix(chains=now[1], failed=len(summary.failed))

    for i, step in enumerate(steps):
        if not step.needs:
            make_ready(i)
    while ready or running:
        while ready and idle:
            worker, (_, i) = idle.pop(), heapq.heappop(ready)
            running[worker.run.remote(steps[i])] = (i, worker, time.perf_counter())
        show()
        if not running:
            break  # steps are ready but every worker is gone: they cannot run
        finished_refs, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
        for ref in finished_refs:
            i, worker, started = running.pop(ref)
            ended = time.perf_counter()
            summary.busy_seconds += ended - started
            try:
                status, message = ray.get(ref)
            except ray.exceptions.RayError as err:  # the worker died more often than Ray retries
                status, message = "failed", f"its worker was lost: {str(err).splitlines()[0]}"
            else:
                idle.append(worker)
            summary.timeline.append((i, workers.index(worker), started - began, ended - began, status))
            done(i, status, message)
    show()
    return summary


# ---------------------------------------------------------------- Ray
def start_ray(address, num_cpus):
    import ray
    from ray.job_config import JobConfig

    # Workers import diam from this project (shared by every machine), as the driver does.
    options = dict(log_to_driver=False, logging_level=logging.WARNING,
                   job_config=JobConfig(code_search_path=[str(Path(__file__).resolve().parent.parent)]))
    if address:
        try:
            ray.init(address=address, **options)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise UserError(f"could not join the Ray cluster at '{address}' ({str(err).splitlines()[0]}). Start "
                            "one with `ray start --head` (and `ray start --address=HEAD:6379` on the other "
                            "machines), or leave --address out to start a Ray on this machine alone. A cluster "
                            "started by `ray start` asks for its token: set RAY_AUTH_MODE=token here, with the "
                            "token in ~/.ray/auth_token or RAY_AUTH_TOKEN.") from None
    else:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 object_store_memory=100 * 1024 ** 2, **options)  # steps pass file names only
    return ray


def worker_slots(nodes, threads: int, gpus_per_train) -> int:
    """How many workers fit on the live nodes, each with `threads` CPUs and a `gpus_per_train` GPU share."""
    slots = 0
    for node in nodes:
        if not node.get("Alive"):
            continue
        resources = node.get("Resources", {})
        fit = math.floor(resources.get("CPU", 0) / threads)
        if gpus_per_train:
            fit = min(fit, math.floor(resources.get("GPU", 0) / gpus_per_train + 1e-9))
        slots += fit
    return slots


def start_workers(ray, threads: int, gpus_per_train) -> list:
    count = worker_slots(ray.nodes(), threads, gpus_per_train)
    resources = ray.cluster_resources()
    if count == 0:
        asked = f"{threads} CPU(s)" + (f" and {gpus_per_train} of a GPU" if gpus_per_train else "")
        raise UserError(f"no machine of the Ray cluster has {asked} for one worker (the cluster has "
                        f"{resources.get('CPU', 0):g} CPUs and {resources.get('GPU', 0):g} GPUs). Lower "
                        "--threads_per_train or --gpus_per_train, or leave --gpus_per_train out to train on CPUs.")
    if not gpus_per_train and resources.get("GPU", 0):
        print(f"note: the cluster has {resources['GPU']:g} GPU(s), but without --gpus_per_train every step "
              "runs on the CPUs.", file=sys.stderr)
    # Passed by hand, not as a Ray runtime_env: that needs ray[default]'s agent.
    env = {name: value for name, value in os.environ.items() if name.startswith("DIAM_")}
    worker = ray.remote(StepWorker).options(num_cpus=threads, num_gpus=gpus_per_train or 0,
                                            max_restarts=RETRIES, max_task_retries=RETRIES)
    return [worker.remote(os.getcwd(), threads, env) for _ in range(count)]


# ---------------------------------------------------------------- command line
class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one paragraph and exit 2, as every script's bad input
        raise UserError(f"{message}. See python run_grid.py --help.")


def _grid_arguments(p) -> None:
    """The flags run_grid.py keeps for itself; every other flag goes to each step."""
    p.add_argument("--datasets", nargs="+", default=list(PAPER_DATASETS),
                   help=f"datasets (default: {' '.join(PAPER_DATASETS)}); from {', '.join(DATASETS)}, or .json files "
                        "describing your own images (docs/own_data.md)")
    p.add_argument("--model_nums", nargs="+", type=int, default=list(PAPER_MODEL_NUMS),
                   help="values of T, the number of target models (default: the paper's 2 4 6 8 12)")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                   help=f"selection methods (default: the paper's seven); from {', '.join(METHODS)}")
    p.add_argument("--seeds", nargs="+", type=int, default=[0],
                   help="repeats to run (default: 0), each with its own split, training streams and selections")
    p.add_argument("--address", default=None,
                   help="a running Ray cluster to join: 'auto' (this machine is part of it) or HEAD_IP:6379 "
                        "(default: start a Ray on this machine alone)")
    p.add_argument("--num_cpus", type=int, default=None,
                   help="CPUs of the Ray started on this machine (default: all of them); not with --address")
    p.add_argument("--gpus_per_train", type=float, default=None,
                   help="train, test and select on GPUs, each worker holding this share of one (e.g. 0.25: "
                        "four workers per GPU); default: CPUs only")
    p.add_argument("--threads_per_train", type=int, default=1,
                   help="CPU threads (cores) of each worker (default: 1); a machine runs as many workers as its "
                        "cores hold, so they never oversubscribe them")


def parse_args(argv) -> tuple[argparse.Namespace, list]:
    """The grid's flags, and the flags for every step (iter_all.sh's EXTRA_ARGS) as they were given."""
    p = _Parser(prog="run_grid.py", description=__doc__.splitlines()[0], allow_abbrev=False,
                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    _grid_arguments(p.add_argument_group("the grid"))
    steps = p.add_argument_group("passed to every step, as iter_all.sh's EXTRA_ARGS (overrides, quirks, folders)")
    cli.add_shared_arguments(steps)
    args = p.parse_args(argv)
    own = _Parser(add_help=False, allow_abbrev=False)
    _grid_arguments(own)
    own.add_argument("--preset")  # each step gets it first, as iter_all.sh's PRESET
    _, extra = own.parse_known_args(argv)
    return args, extra


def check_args(args, extra) -> plan.Loop:
    """The grid's own flags checked, then the loop's input (diam/plan.py, as iter_all.sh's is)."""
    if args.seed is not None:
        raise UserError("--seed is one repeat of one script; the grid runs the repeats listed by --seeds "
                        "(e.g. --seeds 0 1 2).")
    if args.gpus_per_train is not None and not 0 < args.gpus_per_train <= 1:
        raise UserError(f"--gpus_per_train is the share of one GPU a training needs, in (0, 1] (e.g. 0.25 for "
                        f"four at once on each GPU), got {args.gpus_per_train:g}. Leave it out to use CPUs only.")
    if args.threads_per_train < 1:
        raise UserError(f"--threads_per_train must be at least 1, got {args.threads_per_train}.")
    if args.num_cpus is not None and (args.num_cpus < 1 or args.address):
        raise UserError("--num_cpus sizes the Ray this command starts on this machine: a positive number, and "
                        "not with --address (a running cluster has its own CPUs).")
    flags = cli.step_flags(extra, preset=args.preset, device="cuda" if args.gpus_per_train else "cpu")
    return plan.make_loop(args.datasets, args.model_nums, args.methods, args.seeds, flags)


def main(argv) -> None:
    args, extra = parse_args(argv)
    loop = check_args(args, extra)
    steps = plan.steps(loop)
    for step in steps:  # a folder made with other settings, or the paper's results, stop it before Ray starts
        if step.al_iter == 0:
            cli.step_outputs(step)

    from tqdm import tqdm

    began = time.perf_counter()
    ray = start_ray(args.address, args.num_cpus)
    try:
        workers = start_workers(ray, args.threads_per_train, args.gpus_per_train)
        where = f"{args.gpus_per_train:g} GPU and " if args.gpus_per_train else ""
        print(f"run_grid.py: {len(steps)} steps on {len(workers)} workers ({where}{args.threads_per_train} "
              f"CPU thread(s) each); logs in {loop.work_dir / loop.preset.name / 'logs'}", file=sys.stderr, flush=True)
        with tqdm(total=len(steps), desc="grid", unit="step", mininterval=1, dynamic_ncols=True) as progress:
            summary = run_steps(steps, workers, progress)
    except KeyboardInterrupt:
        print("\nrun_grid.py: interrupted; finished steps are kept: run the same command again to continue.",
              file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        ray.shutdown()
    summary.seconds = time.perf_counter() - began
    if os.environ.get(PROFILE_VARIABLE):
        write_timeline(Path(os.environ[PROFILE_VARIABLE]) / "timeline.tsv", steps, summary)
    report(summary, loop.work_dir / loop.preset.name, loop.model_nums)
    if summary.failed:
        raise SystemExit(1)


def write_timeline(path: Path, steps: list[Step], summary: Summary) -> None:
    """One line per step a worker held: seconds from the first step's start, Ray's overhead included."""
    lines = ["step\tscript\tal_iter\tchain\tworker\tstart_s\tend_s\tstatus"]
    for i, worker, start, end, status in sorted(summary.timeline, key=lambda row: row[2]):
        step = steps[i]
        lines.append(f"{i}\t{step.script}\t{step.al_iter}\t{step.chain}\t{worker}\t{start:.3f}\t{end:.3f}\t{status}")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, "\n".join(lines) + "\n")


def report(summary: Summary, run_folder: Path, model_nums) -> None:
    print(f"run_grid.py: {summary.total} steps: {summary.run} run, {summary.skipped} already done, "
          f"{len(summary.failed)} failed, {summary.not_reached} not reached; wall time {summary.seconds:.0f} s")
    if summary.workers and summary.seconds > 0:
        # Below 100%: workers waited for work (chains blocked on their own steps) or for Ray to start.
        print(f"workers busy {100 * summary.busy_seconds / (summary.workers * summary.seconds):.0f}% of "
              f"{summary.workers} x {summary.seconds:.0f} s")
    for step, message in summary.failed:
        print(f"failed: {step.command}\n  {message}\n  log: {step.log}")
    if summary.failed:
        print("Fix what failed and run the same command again: finished steps are skipped.")
    print(f"Results: python table.py --results {run_folder / 'extracted_results'} --model_nums "
          f"{' '.join(map(str, model_nums))}")


EPILOG = """\
examples:
  python run_grid.py --preset quick --datasets digits --model_nums 2      # a Ray on this machine, all its cores
  python run_grid.py --model_nums 12 --gpus_per_train 0.25               # the paper's T=12, 4 trainings per GPU
  python run_grid.py --address auto --gpus_per_train 0.25 ...            # on a running Ray cluster

Several machines: start Ray on each (`ray start --head` on one, `ray start --address=HEAD_IP:6379`
on the others), then run this on one of them with --address auto. The workers read and write the
work dir (and the data root) at the paths the driver sees: put the project, --work_dir and
--data_root on a filesystem shared by every machine, mounted at the same path.
Every step skips work whose outputs exist: after Ctrl-C, or a lost machine, run the same command again.
"""
