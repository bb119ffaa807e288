"""run_grid.py: iter_all.sh's steps on a local Ray, the same files, faults, progress and bad input."""
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from argparse import Namespace

import pytest

from conftest import PROJECT, assert_clean_error
from diam.cli import step_flags
from diam.grid import worker_slots
from diam.plan import make_loop, steps as plan

TINY = ["--epochs", "2", "--initial_labeled", "40", "--pool_size", "300", "--test_size", "100", "--query_batch", "20",
        "--al_iters", "2", "--image_size", "32"]
METHODS = ["random", "DIAM"]
STEPS = 2 * (2 + 2 * 5)  # per seed: iteration 0's 2 nets; per method: test 0, select 0, 2 nets of iteration 1, test 1


def tree_digest(work_dir):
    """{relative path: sha256} of every file a run wrote, aside: lock files, the grid's logs, and the
    temp files a killed process leaves beside an output it had not yet renamed (never read)."""
    return {str(p.relative_to(work_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(work_dir.rglob("*"))
            if p.is_file() and not p.name.endswith(".lock") and not (p.name.startswith(".") and p.suffix == ".tmp")
            and p.relative_to(work_dir).parts[1] != "logs"}


def clean_env(home, **extra):
    env = {**os.environ, "HOME": str(home), "OMP_NUM_THREADS": "1"}
    env["PATH"] = f"{os.path.dirname(sys.executable)}:{env['PATH']}"
    for name in ("DIAM_WORK_DIR", "DIAM_DATA_ROOT", "RAY_ADDRESS"):
        env.pop(name, None)
    return {**env, **extra}


def _interruptible():
    """Ctrl-C reaches the grid even when the suite runs where SIGINT is ignored (a background job)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def grid_command(work_dir, *extra):
    return [sys.executable, str(PROJECT / "run_grid.py"), "--preset", "quick", "--datasets", "digits",
            "--model_nums", "2", "--methods", *METHODS, "--seeds", "0", "1", *TINY, "--work_dir", str(work_dir),
            "--num_cpus", "2", *extra]


def kill_a_training_worker(grid_process, logs, deadline):
    """SIGKILL the worker process of a training step after iteration 0, caught before it finished,
    as a machine or process lost mid-grid would be. Each step's log opens with the worker's pid.
    Returns the step's log, or None when no such step could be caught."""
    tried = set()
    while grid_process.poll() is None and time.monotonic() < deadline:
        for log in sorted(logs.rglob("iter1/train_net*.log")):
            started = re.match(r"--- .* pid (\d+): ", log.read_text()) if log not in tried else None
            if not started:
                continue
            tried.add(log)
            try:
                os.kill(int(started.group(1)), signal.SIGKILL)
            except ProcessLookupError:  # that worker is gone already (killed for an earlier log, or retired)
                continue
            if not re.search(r"^net \d+ trained", log.read_text(), re.M):  # it died mid-step
                return log
        time.sleep(0.02)
    return None


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """iter_all.sh and the grid on the same small quick grid, side by side.

    The grid is interrupted (Ctrl-C) once its first net is trained, then run again; the test
    kills the worker of a later training step in the middle of it.
    """
    home = tmp_path_factory.mktemp("grid")
    reference, grid = home / "iter_all" / "runs", home / "grid" / "runs"
    logs = {name: open(home / f"{name}.out", "w+") for name in ("iter_all", "interrupted")}
    started = []
    try:
        # One iter_all.sh per seed, at the same time: the seeds share no file, and the test is shorter.
        for seed in ("0", "1"):
            started.append(subprocess.Popen(
                ["bash", str(PROJECT / "iter_all.sh"), "cpu", "2"], cwd=home, stdout=logs["iter_all"],
                stderr=subprocess.STDOUT, start_new_session=True,
                env=clean_env(home, PRESET="quick", DATASETS="digits", METHODS=" ".join(METHODS), SEEDS=seed,
                              PYTHON=sys.executable, EXTRA_ARGS=" ".join([*TINY, "--work_dir", str(reference)]))))
        first = subprocess.Popen(grid_command(grid), cwd=home, stdout=logs["interrupted"], stderr=subprocess.STDOUT,
                                 env=clean_env(home), start_new_session=True, preexec_fn=_interruptible)
        started.append(first)
        first_net = grid / "quick" / "digits" / "models" / "iter0" / "net0.pt"
        deadline = time.monotonic() + 300
        while not first_net.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        first.send_signal(signal.SIGINT)  # as Ctrl-C in a terminal
        first.wait(timeout=120)
        second = subprocess.Popen(grid_command(grid), cwd=home, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=clean_env(home), start_new_session=True)
        started.append(second)
        killed = kill_a_training_worker(second, grid / "quick" / "logs", time.monotonic() + 600)
        stdout, stderr = second.communicate(timeout=600)
        resumed = Namespace(returncode=second.returncode, stdout=stdout, stderr=stderr)
        iter_all_codes = [proc.wait(timeout=600) for proc in started[:2]]
    finally:
        for proc in started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    outputs = {}
    for name, f in logs.items():
        f.seek(0)
        outputs[name] = f.read()
        f.close()
    assert iter_all_codes == [0, 0], outputs["iter_all"]
    interrupted = Namespace(returncode=first.returncode, output=outputs["interrupted"])
    return Namespace(reference=reference, grid=grid, interrupted=interrupted, resumed=resumed, killed=killed)


def test_the_grid_writes_the_files_of_iter_all_bit_for_bit(runs):
    assert runs.resumed.returncode == 0, runs.resumed.stdout + runs.resumed.stderr
    grid = tree_digest(runs.grid)
    assert grid == tree_digest(runs.reference)
    # Both seeds and both methods went through their last iteration.
    for prefix in ("", "seed1/"):
        for method in METHODS:
            assert f"quick/extracted_results/{prefix}2/digits/{method}/1/performances.txt" in grid


def test_ctrl_c_stops_the_grid_and_the_same_command_continues(runs):
    assert runs.interrupted.returncode == 130, runs.interrupted.output
    assert "run the same command again to continue" in runs.interrupted.output
    summary = runs.resumed.stdout
    assert f"run_grid.py: {STEPS} steps: " in summary and " 0 failed, 0 not reached" in summary
    already_done = int(summary.split(" run, ")[1].split(" already done")[0])
    assert already_done >= 1, summary  # at least the net trained before Ctrl-C was not trained again
    busy = re.search(r"workers busy (\d+)% of (\d+) x \d+ s", summary)  # how well the grid used its workers
    assert busy and 0 < int(busy.group(1)) <= 100 and busy.group(2) == "2", summary


def test_a_worker_killed_mid_grid_is_retried(runs):
    assert runs.killed is not None, "no training step after iteration 0 was caught running to kill its worker"
    logs = runs.grid / "quick" / "logs"
    # The killed step's log shows the attempt that died and the retry that trained the net.
    attempts = {log: log.read_text().count("\n--- ") + log.read_text().startswith("--- ")
                for log in logs.rglob("iter1/train_net*.log")}
    retried = [log for log, n in attempts.items() if n >= 2]
    # At least the killed step ran twice. Ray may lose a second worker while it restarts the
    # killed one (seen once, on a loaded machine): that step is retried too, not lost.
    assert runs.killed in retried, attempts
    for log in retried:
        assert log.read_text().rstrip().splitlines()[-1].startswith("net "), log.read_text()
    assert runs.resumed.returncode == 0  # and the files are iter_all.sh's (first test)


def test_every_step_leaves_its_output_in_a_log_in_the_run_folder(runs):
    logs = sorted((runs.grid / "quick" / "logs").rglob("*.log"))
    assert len(logs) == STEPS
    select = runs.grid / "quick" / "logs" / "seed1" / "digits" / "T2" / "DIAM" / "iter0" / "select.log"
    text = select.read_text()
    assert "python al_select.py --dataset digits --method DIAM --al_iter 0 --preset quick --model_num 2" in text
    assert "DIAM selected 20 of 260 unlabeled" in text


def _iter_all_steps(tmp_path, model_num, seeds, datasets):
    """The command lines iter_all.sh runs, recorded by a stand-in for python; one per trained net."""
    stub = tmp_path / "python-stub"
    stub.write_text('#!/bin/bash\nif [ "$1" = "-c" ]; then printf "2\\n%s\\n%s\\n" "$DATASETS" "$METHODS"; exit 0; fi\n'
                    'echo "$*" >> "$STEPS_LOG"\n')  # the plan: last iteration 2, DATASETS and METHODS as given
    stub.chmod(0o755)
    log = tmp_path / "steps.log"
    result = subprocess.run(["bash", str(PROJECT / "iter_all.sh"), "cpu", str(model_num)], capture_output=True,
                            text=True, timeout=60,
                            env={**os.environ, "PYTHON": str(stub), "STEPS_LOG": str(log), "DATASETS": datasets,
                                 "METHODS": " ".join(METHODS), "SEEDS": seeds, "PRESET": "quick",
                                 "EXTRA_ARGS": "--al_iters 3 --epochs 2"})
    assert result.returncode == 0, result.stderr
    steps = []
    for line in log.read_text().splitlines():
        script, *argv = line.split()
        if "--net_id" in argv:  # one process may train several nets; the grid trains each as a task
            at = argv.index("--net_id")
            ends = next(i for i in range(at + 1, len(argv)) if argv[i].startswith("--"))
            steps += [(os.path.basename(script), (*argv[:at], "--net_id", n, *argv[ends:])) for n in argv[at + 1:ends]]
        else:
            steps.append((os.path.basename(script), tuple(argv)))
    return sorted(steps)


@pytest.mark.parametrize("model_num, seeds, datasets", [(3, "0 2", "digits fmnist"), (1, "1", "digits")])
def test_the_grid_plans_exactly_the_steps_of_iter_all(tmp_path, model_num, seeds, datasets):
    flags = step_flags(["--al_iters", "3", "--epochs", "2"], preset="quick", device="cpu")
    steps = plan(make_loop(datasets.split(), [model_num], METHODS, [int(s) for s in seeds.split()], flags))
    assert sorted((s.script, s.argv) for s in steps) == _iter_all_steps(tmp_path, model_num, seeds, datasets)
    # Each step waits for the steps whose files it reads.
    by_command = {(s.script, s.argv): s for s in steps}
    test = next(s for s in steps if s.script == "test_multi_models.py" and s.al_iter == 2)
    assert sorted(steps[i].script for i in test.needs) == ["train_net.py"] * model_num
    assert all(steps[i].al_iter == 2 for i in test.needs)
    train = next(s for s in steps if s.script == "train_net.py" and s.al_iter == 2)
    assert [(steps[i].script, steps[i].al_iter) for i in train.needs] == [("al_select.py", 1)]
    assert len(by_command) == len(steps)


def test_workers_never_ask_for_more_cores_or_gpu_than_a_machine_has():
    nodes = [{"Alive": True, "Resources": {"CPU": 16.0, "GPU": 1.0}},
             {"Alive": True, "Resources": {"CPU": 3.0}},
             {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]
    assert worker_slots(nodes, threads=1, gpus_per_train=None) == 19
    assert worker_slots(nodes, threads=2, gpus_per_train=None) == 8 + 1
    assert worker_slots(nodes, threads=4, gpus_per_train=None) == 4  # no worker straddles two machines
    assert worker_slots(nodes, threads=2, gpus_per_train=0.25) == 4  # the GPU share, not the cores, bounds it
    assert worker_slots(nodes, threads=2, gpus_per_train=0.3) == 3
    assert worker_slots(nodes, threads=8, gpus_per_train=0.1) == 2


@pytest.mark.parametrize("flags, message", [
    (["--datasets", "digits", "cifar10"], "unknown dataset 'cifar10'"),
    (["--methods", "DIAM", "bold"], "unknown method 'bold'"),
    (["--model_nums", "2", "13"], "between 1 and 12"),
    (["--model_nums", "0"], "between 1 and 12"),
    (["--seeds", "0", "-1"], "--seeds must be repeat indices"),
    (["--seeds", "one"], "invalid int value: 'one'"),
    (["--seed", "1"], "--seeds"),
    (["--gpus_per_train", "0"], "--gpus_per_train is the share of one GPU"),
    (["--gpus_per_train", "-0.5"], "--gpus_per_train is the share of one GPU"),
    (["--gpus_per_train", "2"], "--gpus_per_train is the share of one GPU"),
    (["--threads_per_train", "0"], "--threads_per_train must be at least 1"),
    (["--address", "auto", "--num_cpus", "2"], "not with --address"),
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--epochs", "0"], "--epochs must be positive"),
    (["--device", "cpu"], "unrecognized arguments: --device cpu"),
    (["--model_nums", "2", "--nets", "ofa0", "resnt18"], "--nets names an unknown target model, 'resnt18'."),
])
def test_bad_arguments_are_one_paragraph_errors(tmp_path, flags, message):
    result = subprocess.run([sys.executable, str(PROJECT / "run_grid.py"), "--preset", "quick", "--datasets", "digits",
                             "--work_dir", str(tmp_path / "runs"), *flags], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60, env=clean_env(tmp_path))
    assert result.returncode == 2
    assert_clean_error(result, message)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "runs").exists()


def test_the_gpu_check_runs_every_part_at_toy_size_on_the_cpu(tmp_path):
    out = tmp_path / "RESULTS_gpu_dry.txt"
    result = subprocess.run(["bash", str(PROJECT / "bench" / "gpu_check.sh"), "--dry", "--out", str(out)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300, env=clean_env(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = out.read_text()
    for part in ("machine and APIs", "iteration 0 in one process", "scoring images/s: plain, fused, graphs",
                 "training step ms: eager, graphed", "CUDA tests", "bench_selection, DIAM_qp"):
        assert f"=== {part} (limit " in text and f"--- {part}: " in text
    assert "pieces that work: " in text  # the probe's verdict, which the iteration reads
    # the headline's phases, each with its time, and the total against the target
    for phase in ("setup:", "phase train:", "phase test:", "phase selection DIAM:", "phase selection CAL:",
                  "phase selection entropy:", "iteration 0 total", "bf16 check, bf16:"):
        assert phase in text, phase
    assert "fused/plain" in text and "eager ms" in text
    assert "DIAM_qp's QP (n = 400) answered by the certified route" in text
    assert "gpu_check.sh: all parts passed" in text


def test_the_gpu_check_skips_a_part_the_budget_cannot_hold_and_says_so(tmp_path):
    out = tmp_path / "RESULTS_gpu_dry.txt"
    result = subprocess.run(["bash", str(PROJECT / "bench" / "gpu_check.sh"), "--dry", "--out", str(out),
                             "--only", "steps", "--budget", "10"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120, env=clean_env(tmp_path))
    assert result.returncode == 1
    text = out.read_text()
    assert "=== training step ms: eager, graphed: SKIPPED" in text
    assert "did not pass: training step ms: eager, graphed (skipped)" in text


def test_the_profile_reader_counts_each_workers_main_thread_once_in_its_most_specific_phase(tmp_path):
    # A backward and an SGD update run inside a training step, a pool pass inside train_target_net: each sample
    # counts once, in its own phase, not in the step's or the training's; a Ray helper thread's are not counted.
    worker = "<module> (ray/_private/workers/default_worker.py:323);run_step (diam/cli.py:222);"
    train = worker + "run_train (diam/cli.py:110);train_target_net (diam/training.py:380);"
    (tmp_path / "worker.txt").write_text(
        f"{train}predict (diam/training.py:120);Conv2d._conv_forward (torch/nn/modules/conv.py:560) 30\n"
        f"{train}step (diam/training.py:270);_engine_run_backward (torch/autograd/graph.py:1072) 50\n"
        f"{train}step (diam/training.py:272);Optimizer.profile_hook_step.<locals>.wrapper (torch/optim/optimizer.py:549) 10\n"
        f"{worker}run_test (diam/cli.py:150);evaluate (diam/training.py:190) 10\n"
        "Thread._bootstrap (threading.py:1002);Thread.run (threading.py:982) 900\n")
    result = subprocess.run([sys.executable, str(PROJECT / "bench" / "spy_shares.py"), str(tmp_path / "worker.txt")],
                            capture_output=True, text=True, check=True)
    rows = [re.match(r"\s*([\d.]+)%\s+[\d,]+ s  (.+)", line).groups() for line in result.stdout.splitlines()[1:]]
    assert {phase: float(share) for share, phase in rows} == {
        "training: backward": 50.0, "training: passes over the pool (snapshots, probabilities, features)": 30.0,
        "training: SGD update": 10.0, "test steps": 10.0}
    assert result.stdout.startswith("100 samples of the workers' main threads (10 core-seconds at 10 Hz)")
