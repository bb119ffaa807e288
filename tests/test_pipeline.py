"""SPEC sections 4-6 end to end: train_net.py, al_select.py, test_multi_models.py, iter_all.sh."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import PROJECT, assert_clean_error, run_script
from diam import cli
from diam.experiment import Run, select_step
from diam.paths import RunPaths, read_indices
from diam.presets import METHODS, PRESETS

QUICK = PRESETS["quick"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """Iteration 0 of nets 0 and 1 trained once at the quick preset on digits."""
    home = tmp_path_factory.mktemp("quick")
    result = run_script("train_net.py", "--net_id", 0, 1, "--dataset", "digits", "--al_iter", 0, "--model_num", 2,
                        "--preset", "quick", "--work_dir", home / "runs", cwd=home, env={"HOME": str(home)})
    assert result.returncode == 0, result.stderr
    return home, RunPaths(home / "runs", "quick", "digits")


def quick_args(home, *extra):
    return cli.parser("test").parse_args(
        ["--dataset", "digits", "--model_num", "2", "--preset", "quick", "--work_dir", str(home / "runs"),
         "--device", "cpu", *map(str, extra)])


def test_one_training_run_saves_checkpoint_and_late_epoch_snapshots(quick_run):
    home, paths = quick_run
    labeled, unlabeled = read_indices(paths.indices(2, "random", 0), "digits", 1297)
    assert len(labeled) == QUICK.initial_labeled
    for net_id in (0, 1):
        assert paths.checkpoint(2, "random", 0, net_id).exists()
        info = json.loads(paths.checkpoint_info(2, "random", 0, net_id).read_text())
        assert info["init"] == "he_fout"  # the default: what the original code trained from
        with np.load(paths.pool_predictions(2, "random", 0, net_id)) as z:
            assert z["snapshot_labels"].shape == (QUICK.snapshot_epochs, len(unlabeled))
            assert z["unlabeled_probs"].shape == (len(unlabeled), 10)
            np.testing.assert_allclose(z["unlabeled_probs"].sum(1), 1, atol=1e-4)
            # the last snapshot is the final model's prediction, recorded in the same pass
            np.testing.assert_array_equal(z["snapshot_labels"][-1], z["unlabeled_probs"].argmax(1))
            assert ("pool_features" in z) == (net_id == QUICK.coreset_feature_net)


def test_test_multi_models_writes_T_rows_far_above_chance(quick_run):
    home, paths = quick_run
    result = run_script("test_multi_models.py", "--dataset", "digits", "--method", "random", "--al_iter", 0,
                        "--model_num", 2, "--preset", "quick", "--work_dir", home / "runs", cwd=home)
    assert result.returncode == 0, result.stderr
    rows = np.loadtxt(paths.performances(2, "random", 0), ndmin=2)
    assert rows.shape == (2, 2)
    assert (rows[:, 0] > 30).all(), rows  # chance is 10%
    assert (rows[:, 1] >= rows[:, 0]).all()
    again = run_script("test_multi_models.py", "--dataset", "digits", "--method", "random", "--al_iter", 0,
                       "--model_num", 2, "--preset", "quick", "--work_dir", home / "runs", cwd=home)
    assert "already done" in again.stdout


@pytest.mark.parametrize("method", METHODS)
def test_selection_adds_exactly_one_batch_from_the_unlabeled_pool(quick_run, method):
    home, paths = quick_run
    run = Run(quick_args(home, "--method", method, "--al_iter", 0))
    select_step(run)
    before_l, before_u = read_indices(paths.indices(2, method, 0), "digits", 1297)
    after_l, after_u = read_indices(paths.indices(2, method, 1), "digits", 1297)
    chosen = after_l[len(before_l):]
    np.testing.assert_array_equal(after_l[:len(before_l)], before_l)
    assert len(chosen) == QUICK.query_batch == len(np.unique(chosen))
    assert np.isin(chosen, before_u).all()
    assert np.array_equal(np.sort(np.concatenate([after_l, after_u])), np.arange(1297))


def test_selection_is_reproducible_for_the_same_dataset_method_and_iteration(quick_run):
    home, paths = quick_run
    for attempt in range(2):
        select_step(Run(quick_args(home, "--method", "DIAM", "--al_iter", 0, "--redo")))
        labeled, _ = read_indices(paths.indices(2, "DIAM", 1), "digits", 1297)
        if attempt == 0:
            first = labeled
    np.testing.assert_array_equal(first, labeled)


def test_selection_reuses_what_training_recorded(quick_run, monkeypatch):
    home, _ = quick_run
    import diam.experiment as experiment

    def no_inference(*args, **kwargs):
        raise AssertionError("selection ran a model over the pool although training recorded its outputs")

    monkeypatch.setattr(experiment, "predict", no_inference)
    for method in ("entropy", "coreset", "CAL"):
        select_step(Run(quick_args(home, "--method", method, "--al_iter", 0, "--redo")))


def test_batch_larger_than_the_pool_takes_what_is_left(quick_run, capsys):
    home, paths = quick_run
    select_step(Run(quick_args(home, "--method", "margin", "--al_iter", 0, "--redo")), batch_size=5000)
    labeled, unlabeled = read_indices(paths.indices(2, "margin", 1), "digits", 1297)
    assert len(unlabeled) == 0 and len(labeled) == 1297
    assert "fewer than the batch" in capsys.readouterr().err
    select_step(Run(quick_args(home, "--method", "margin", "--al_iter", 0, "--redo")))  # restore


# ------------------------------------------------------------------ clean errors
def _script(name, *args, cwd):
    return run_script(name, *args, "--preset", "quick", cwd=cwd)


def test_unknown_dataset_method_and_net_are_clean_errors(workdir):
    assert_clean_error(_script("train_net.py", "--net_id", 0, "--dataset", "cifar", "--al_iter", 0,
                               "--model_num", 1, cwd=workdir), "unknown dataset", "digits")
    assert_clean_error(_script("al_select.py", "--method", "BALD", "--dataset", "digits", "--al_iter", 0,
                               "--model_num", 1, cwd=workdir), "unknown method", "DIAM")
    assert_clean_error(_script("train_net.py", "--net_id", 3, "--dataset", "digits", "--al_iter", 0,
                               "--model_num", 2, cwd=workdir), "--net_id 3", "0..1")
    assert_clean_error(_script("train_net.py", "--net_id", 0, "--dataset", "digits", "--al_iter", 9,
                               "--method", "DIAM", "--model_num", 1, cwd=workdir), "--al_iter must be between")


def test_iteration_without_a_selection_is_a_clean_error(workdir):
    result = _script("train_net.py", "--net_id", 0, "--dataset", "digits", "--al_iter", 2, "--method", "DIAM",
                     "--model_num", 1, cwd=workdir)
    assert_clean_error(result, "no selection has been written for al_iter 2", "al_select.py --al_iter 1")


def test_missing_dataset_offline_is_a_clean_error(workdir):
    result = _script("train_net.py", "--net_id", 0, "--dataset", "mnist", "--al_iter", 0, "--model_num", 1,
                     cwd=workdir)
    assert_clean_error(result, "could not be downloaded", "train-images-idx3-ubyte", "--data_root")


def test_testing_untrained_nets_names_the_missing_training(workdir):
    result = _script("test_multi_models.py", "--dataset", "digits", "--method", "random", "--al_iter", 0,
                     "--model_num", 1, cwd=workdir)
    assert_clean_error(result, "has not been trained", "train_net.py --net_id 0")


def test_results_never_go_into_the_paper_folder(workdir):
    result = _script("test_multi_models.py", "--dataset", "digits", "--method", "random", "--al_iter", 0,
                     "--model_num", 1, "--results_dir", PROJECT / "extracted_results", cwd=workdir)
    assert_clean_error(result, "paper's published results")


def test_changed_settings_in_one_run_folder_are_refused(quick_run):
    home, _ = quick_run
    result = run_script("train_net.py", "--net_id", 0, "--dataset", "digits", "--al_iter", 0, "--model_num", 2,
                        "--preset", "quick", "--epochs", 3, "--work_dir", home / "runs", cwd=home)
    assert_clean_error(result, "other settings", "epochs")


# ------------------------------------------------------------------ the loop
def _loop(home, methods="random DIAM", env=None):
    return subprocess.run(
        ["bash", str(PROJECT / "iter_all.sh"), "cpu", "2"], cwd=home, capture_output=True, text=True, timeout=900,
        env={**os.environ, "PYTHON": sys.executable, "PRESET": "quick",
             "DATASETS": "digits", "METHODS": methods, "DIAM_WORK_DIR": str(home / "runs"),
             "EXTRA_ARGS": "--al_iters 2 --epochs 4", "HOME": str(home), "https_proxy": "http://127.0.0.1:9",
             **(env or {})})


def test_iter_all_runs_the_loop_and_resumes_after_losing_the_last_step(tmp_path):
    # Two training processes, one core each: the everyday use of PARALLEL (the sequential
    # loop is the reference run of test_reliability.py), and a shorter test.
    parallel = {"PARALLEL": "2"}
    first = _loop(tmp_path, env=parallel)
    assert first.returncode == 0, first.stderr
    results = tmp_path / "runs" / "quick" / "extracted_results" / "2" / "digits"
    final = {m: np.loadtxt(results / m / "1" / "performances.txt") for m in ("random", "DIAM")}
    assert all(v.shape == (2, 2) for v in final.values())
    # Lose the last step's outputs (and one of its checkpoints), then run the same command.
    (results / "DIAM" / "1" / "performances.txt").unlink()
    (tmp_path / "runs" / "quick" / "digits" / "models" / "T2" / "DIAM" / "iter1" / "net1.pt").unlink()
    second = _loop(tmp_path, env=parallel)
    assert second.returncode == 0, second.stderr
    assert "already done" in second.stdout and "training nets 1 on cpu" in second.stdout
    np.testing.assert_array_equal(np.loadtxt(results / "DIAM" / "1" / "performances.txt"), final["DIAM"])


@pytest.mark.parametrize("parallel", ["1", "2"])
def test_iter_all_stops_at_the_first_failing_step(tmp_path, parallel):
    result = _loop(tmp_path, methods="random", env={"DATASETS": "mnist", "PARALLEL": parallel})
    assert result.returncode != 0
    assert "step failed" in result.stderr and "could not be downloaded" in result.stderr
    assert "test_multi_models.py" not in result.stdout + result.stderr  # nothing ran after the failed training


RECORDING_PYTHON = """#!/bin/bash
# Stands in for python: the preset has 2 iterations; each step logs where it would run, then succeeds.
if [ "$1" = "-c" ]; then echo 1; exit 0; fi
echo "gpu=${CUDA_VISIBLE_DEVICES:-none} threads=${OMP_NUM_THREADS:-unset} $*" >> "$STEPS_LOG"
"""


def _recorded_loop(tmp_path, gpu_id, model_num, parallel, env=None):
    stub = tmp_path / "python-stub"
    stub.write_text(RECORDING_PYTHON)
    stub.chmod(0o755)
    log = tmp_path / "steps.log"
    result = subprocess.run(
        ["bash", str(PROJECT / "iter_all.sh"), gpu_id, str(model_num)], cwd=tmp_path, capture_output=True,
        text=True, timeout=60,
        env={**os.environ, "PYTHON": str(stub), "STEPS_LOG": str(log), "PARALLEL": parallel,
             "DATASETS": "digits", "METHODS": "DIAM", **(env or {})})
    assert result.returncode == 0, result.stderr
    return sorted(log.read_text().splitlines())


def _net_ids(line):
    return line.split("--net_id ")[1].split(" --preset")[0]


def test_parallel_training_deals_the_nets_over_gpus_and_processes(tmp_path):
    steps = _recorded_loop(tmp_path, "0,1", 5, "2")
    train = [s for s in steps if "train_net.py" in s and "--al_iter 0" in s]
    # Four processes (2 GPUs x 2), net n in process n mod 4, process w on GPU w mod 2.
    assert sorted((s.split()[0], _net_ids(s)) for s in train) == \
        [("gpu=0", "0 4"), ("gpu=0", "2"), ("gpu=1", "1"), ("gpu=1", "3")]
    assert all("--device cuda" in s for s in steps)
    later = [s for s in steps if "train_net.py" not in s]  # testing and selecting: on the first GPU
    assert later and all(s.startswith("gpu=0 ") for s in later)


def test_parallel_training_on_the_cpu_shares_the_cores(tmp_path):
    nproc = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout)
    steps = _recorded_loop(tmp_path, "cpu", 3, "2", env={"OMP_NUM_THREADS": ""})
    train = [s for s in steps if "train_net.py" in s and "--al_iter 0" in s]
    assert sorted(_net_ids(s) for s in train) == ["0 2", "1"]
    assert all(s.startswith(f"gpu=none threads={max(1, nproc // 2)} ") and "--device cpu" in s for s in train)
    # With one process per device (the default) one call trains every net.
    (tmp_path / "default").mkdir()
    steps = _recorded_loop(tmp_path / "default", "cpu", 3, "1")
    assert [_net_ids(s) for s in steps if "train_net.py" in s and "--al_iter 0" in s] == ["0 1 2"]


@pytest.mark.parametrize("gpu_id, parallel, message", [("0,,1", "1", "GPU_ID must be"), ("cuda", "1", "GPU_ID must be"),
                                                      ("cpu", "0", "PARALLEL must be"),
                                                      ("cpu", "two", "PARALLEL must be")])
def test_iter_all_refuses_bad_devices_and_parallel_counts(tmp_path, gpu_id, parallel, message):
    result = subprocess.run(["bash", str(PROJECT / "iter_all.sh"), gpu_id, "2"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60, env={**os.environ, "PARALLEL": parallel})
    assert result.returncode == 2 and result.stderr.startswith("error: ") and message in result.stderr


def test_finished_steps_are_skipped_without_loading_torch(quick_run, tmp_path):
    home, _ = quick_run
    broken = tmp_path / "no_torch" / "torch"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('torch must not be imported to skip a finished step')\n")
    result = run_script("train_net.py", "--net_id", 0, 1, "--dataset", "digits", "--al_iter", 0, "--model_num", 2,
                        "--preset", "quick", "--work_dir", home / "runs", cwd=home,
                        env={"PYTHONPATH": str(broken.parent)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("already done") == 2
