"""SPEC section 9: repeats. --seed S on every script, SEEDS in iter_all.sh, seed 0 as today."""
import hashlib
import os
import subprocess

import numpy as np

from conftest import PROJECT
from conftest import run_script
from diam.paths import RunPaths, read_indices

TINY = ["--preset", "quick", "--epochs", "2", "--initial_labeled", "40", "--pool_size", "300",
        "--test_size", "100", "--query_batch", "20", "--al_iters", "2", "--device", "cpu"]
DIGITS_POOL = 300


def tree_digest(folder):
    """{relative path: sha256} of every file under folder, lock files aside."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


def train_iteration0(work_dir, *extra):
    result = run_script("train_net.py", "--net_id", 0, "--dataset", "digits", "--al_iter", 0, "--model_num", 1,
                        *TINY, "--work_dir", work_dir, *extra, cwd=work_dir.parent)
    assert result.returncode == 0, result.stderr


def test_seed_0_is_bit_identical_to_no_seed_and_keeps_todays_paths(tmp_path):
    train_iteration0(tmp_path / "plain")
    train_iteration0(tmp_path / "seed0", "--seed", 0)
    plain, seed0 = tree_digest(tmp_path / "plain"), tree_digest(tmp_path / "seed0")
    assert plain == seed0
    assert "quick/digits/models/iter0/net0.pt" in plain


def iter_all(work_dir, seeds):
    env = {**os.environ, "PRESET": "quick", "DATASETS": "digits", "METHODS": "random", "SEEDS": seeds,
           "EXTRA_ARGS": " ".join(TINY[2:-2] + ["--work_dir", str(work_dir)]), "PYTHON": "python",
           "OMP_NUM_THREADS": "1", "HOME": str(work_dir.parent)}
    env["PATH"] = f"{os.path.dirname(os.sys.executable)}:{env['PATH']}"
    return subprocess.run(["bash", str(PROJECT / "iter_all.sh"), "cpu", "1"], env=env, capture_output=True,
                          text=True, timeout=600)


def test_iter_all_runs_every_seed_and_resumes_each_on_its_own(tmp_path):
    work = tmp_path / "runs"
    first = iter_all(work, "0 1")
    assert first.returncode == 0, first.stderr
    results = work / "quick" / "extracted_results"
    done = {seed: results / prefix / "1/digits/random/1/performances.txt" for seed, prefix in ((0, ""), (1, "seed1"))}
    assert all(p.exists() for p in done.values())
    # Each seed has its own folder, initial split and training streams.
    seed0, seed1 = RunPaths(work, "quick", "digits"), RunPaths(work, "quick", "digits", seed=1)
    assert seed1.root == work / "quick" / "seed1" / "digits" and seed1.performances(1, "random", 1) == done[1]
    labeled0, _ = read_indices(seed0.indices(1, "random", 0), "digits", DIGITS_POOL)
    labeled1, _ = read_indices(seed1.indices(1, "random", 0), "digits", DIGITS_POOL)
    assert len(labeled0) == len(labeled1) == 40 and set(labeled0) != set(labeled1)
    with np.load(seed0.pool_predictions(1, "random", 0, 0)) as a, np.load(seed1.pool_predictions(1, "random", 0, 0)) as b:
        assert not np.array_equal(a["unlabeled_probs"][:5], b["unlabeled_probs"][:5])
    finished = tree_digest(work)
    # Seed 1 loses its last iteration (as if killed there); seed 0 is complete.
    seed1_last = work / "quick" / "seed1" / "digits" / "models" / "T1" / "random" / "iter1"
    for path in [*seed1_last.iterdir(), done[1], done[1].with_name("models.json")]:
        path.unlink()
    again = iter_all(work, "0 1")
    assert again.returncode == 0, again.stderr
    assert tree_digest(work) == finished
    # Seed 0's steps were skipped, seed 1's last iteration was redone.
    assert f"already done: {done[0]}" in again.stdout
    assert "net 0 trained" in again.stdout and again.stdout.count("net 0 trained") == 1


def test_bad_seeds_are_refused(tmp_path):
    bad = iter_all(tmp_path / "runs", "0 x")
    assert bad.returncode == 2 and "SEEDS" in bad.stderr
    result = run_script("train_net.py", "--net_id", 0, "--dataset", "digits", "--al_iter", 0, "--model_num", 1,
                        *TINY, "--seed", -1, "--work_dir", tmp_path / "runs", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: --seed"), result.stderr
    assert not (tmp_path / "runs").exists()
