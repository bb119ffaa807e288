"""SPEC sections 4-6 end to end: train_net.py, al_select.py, test_multi_models.py, iter_all.sh."""
import dataclasses
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import PROJECT, assert_clean_error, linked_copy, run_script, run_script_here
from diam import cli, models, selection_inputs, strategies
from diam.settings import run_config, settings_from_args
from diam.run import Run
from diam.selection_inputs import selection_rng
from diam.paths import RunPaths, read_indices, write_json
from diam.errors import UserError
from diam.methods import METHODS, UncertaintySettings
from diam.pool import Pool
from diam.presets import PRESETS, preset_from_args
from diam.training import evaluate

QUICK = PRESETS["quick"]
# A tiny iteration (seconds): enough steps that the nets' outputs vary over the pool and
# between nets and epochs, so a selection fed the wrong arrays picks another batch. The
# whole digits pool (1,297): DIAM_qp's neighbour counts read the features only when its
# subsample (a fifth of the unlabeled pool) holds 200 examples or more.
TINY = {"pool_size": 1297, "test_size": 100, "initial_labeled": 100, "query_batch": 10, "epochs": 4,
        "train_batch": 10, "image_size": 32}
TINY_ARGS = [str(a) for k, v in TINY.items() for a in (f"--{k}", v)]
POOL, T = TINY["pool_size"], 2


@pytest.fixture(scope="module")
def tiny_iteration(tmp_path_factory):
    """Iteration 0 of nets 0 and 1 trained once at the tiny size on digits."""
    home = tmp_path_factory.mktemp("tiny")
    result = run_script("train_net.py", "--net_id", 0, 1, "--dataset", "digits", "--al_iter", 0, "--model_num", T,
                        "--preset", "quick", *TINY_ARGS, "--work_dir", home / "runs", "--device", "cpu", cwd=home)
    assert result.returncode == 0, result.stderr
    return home / "runs"


@pytest.fixture
def tiny_runs(tiny_iteration, tmp_path):
    """This test's own copy of the tiny iteration, so that no test sees another's outputs."""
    return linked_copy(tiny_iteration, tmp_path / "runs")


def tiny_args(runs, *extra):
    return ["--dataset", "digits", "--model_num", T, "--preset", "quick", *TINY_ARGS, "--work_dir", runs,
            "--device", "cpu", *extra]


def tiny_paths(runs):
    return RunPaths(runs, "quick", "digits")


def test_one_training_run_saves_checkpoint_and_late_epoch_snapshots(tiny_iteration):
    paths = tiny_paths(tiny_iteration)
    labeled, unlabeled = read_indices(paths.indices(T, "random", 0), "digits", POOL)
    assert len(labeled) == TINY["initial_labeled"]
    snapshot_epochs = dataclasses.replace(QUICK, epochs=TINY["epochs"]).snapshot_epochs
    for net_id in range(T):
        assert paths.checkpoint(T, "random", 0, net_id).exists()
        info = json.loads(paths.checkpoint_info(T, "random", 0, net_id).read_text())
        assert info["init"] == "he_fout"  # the default: what the original code trained from
        with np.load(paths.pool_predictions(T, "random", 0, net_id)) as z:
            np.testing.assert_array_equal(z["unlabeled"], unlabeled)
            assert z["snapshot_labels"].shape == (snapshot_epochs, len(unlabeled))
            assert z["unlabeled_probs"].shape == (len(unlabeled), 10)
            np.testing.assert_allclose(z["unlabeled_probs"].sum(1), 1, atol=1e-4)
            # the last snapshot is the final model's prediction, recorded in the same pass
            np.testing.assert_array_equal(z["snapshot_labels"][-1], z["unlabeled_probs"].argmax(1))
            assert ("pool_features" in z) == (net_id == QUICK.coreset_feature_net)
            if "pool_features" in z:
                assert z["pool_features"].shape == (POOL, 1280)


def test_test_multi_models_writes_each_nets_accuracy_in_net_order(tiny_runs):
    runs = tiny_runs
    args = tiny_args(runs, "--method", "random", "--al_iter", 0)
    result = run_script_here("test_multi_models.py", *args)
    assert result.returncode == 0, result.stderr
    rows = tiny_paths(runs).performances(T, "random", 0).read_text().splitlines()
    run = Run(settings_from_args(cli.parser("test").parse_args(map(str, args))))
    expected = []
    for net_id in range(T):  # each checkpoint, at its own test size, on the test split
        net, _ = run.load_net(net_id)
        top1, top5 = evaluate(net, run.data.test_images, run.data.test_labels, run.image_size(net_id, testing=True),
                              QUICK.eval_batch)
        expected.append(f"{top1:.6f} {top5:.6f}")
    assert rows == expected
    # models.json beside it says how each net was made: its checkpoint's record, init included.
    paths = tiny_paths(runs)
    recorded = json.loads(paths.performances(T, "random", 0).with_name("models.json").read_text())
    for net_id, info in enumerate(recorded):
        trained = json.loads(paths.checkpoint_info(T, "random", 0, net_id).read_text())
        assert info["init"] == trained["init"] == "he_fout"
        assert {k: info[k] for k in trained} == trained
    again = run_script_here("test_multi_models.py", *args)
    assert again.returncode == 0 and "already done" in again.stdout


def test_test_at_net0_size_tests_every_net_at_net_0s_input_size(tmp_path, monkeypatch):
    # At the paper's sizes (the quick preset tests every net at 32 px): nets 0 and 1 take 224 and 192.
    import diam.experiment as experiment

    runs, sizes = tmp_path / "runs", []
    common = ["--dataset", "digits", "--model_num", T, "--preset", "paper", "--pool_size", 60, "--test_size", 4,
              "--method", "DIAM", "--al_iter", 0, "--device", "cpu", "--work_dir", runs]
    paths = RunPaths(runs, "paper", "digits")
    for net_id in range(T):  # untrained nets stand for trained ones: only the test size matters here
        info = {"net_id": net_id, "dataset": "digits", "init": "pytorch"}
        paths.checkpoint(T, "DIAM", 0, net_id).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": models.build_net(net_id).state_dict(), "info": info},
                   paths.checkpoint(T, "DIAM", 0, net_id))
    real_evaluate = experiment.evaluate
    monkeypatch.setattr(experiment, "evaluate", lambda net, images, labels, size, *a, **k:
                        sizes.append(size) or real_evaluate(net, images, labels, size, *a, **k))
    tested = {}
    for quirk in ([], ["--test_at_net0_size"]):
        results = tmp_path / ("quirk" if quirk else "default")
        assert run_script_here("test_multi_models.py", *common, *quirk, "--results_dir", results).returncode == 0
        tested[bool(quirk)] = [i["test_image_size"] for i in
                               json.loads((results / str(T) / "digits/DIAM/0/models.json").read_text())]
    assert tested == {False: [224, 192], True: [224, 224]} and sizes == [224, 192, 224, 224]


# ------------------------------------------------------------------ selection, wired end to end
def _recorded(paths, method):
    """The index file and the pool records of iteration 0, read here, without experiment.py."""
    with np.load(paths.indices(T, method, 0)) as z:
        labeled, unlabeled = z["labeled"], z["unlabeled"]
    records = []
    for net_id in range(T):
        with np.load(paths.pool_predictions(T, method, 0, net_id)) as z:
            records.append(dict(z))
    return labeled, unlabeled, records


def _strategy_batch(method, labeled, unlabeled, records, rng, run=None):
    """Positions into the unlabeled set that the pure strategy picks from those arrays (bald: from the
    MC-dropout passes the selection step computes from the checkpoints, which training does not record)."""
    batch = TINY["query_batch"]
    if method == "bald":
        return strategies.bald(selection_inputs.dropout_probs(run, unlabeled), batch)
    if method == "badge":  # every net's probabilities and penultimate features of the unlabeled pool
        probs = np.stack([r["unlabeled_probs"] for r in records])
        features = np.stack([r["pool_features"][unlabeled] for r in records])
        return strategies.badge(probs, features, batch, rng)
    if method == "random":
        return strategies.random_sampling(len(unlabeled), batch, rng)
    if method in ("least_conf", "margin", "entropy"):
        probs = np.stack([r["unlabeled_probs"] for r in records])  # (T, U, C)
        pick = {"least_conf": strategies.least_confidence, "margin": strategies.margin,
                "entropy": strategies.entropy}[method]
        return pick(probs, batch)
    if method == "coreset":  # in the penultimate features of net 0 (the preset's coreset_feature_net)
        assert QUICK.coreset_feature_net == 0
        features = records[0]["pool_features"]  # (pool, dim), pool order
        return strategies.coreset(features[unlabeled], features[labeled], batch)
    if method in ("lewis", "lewis_oneshot"):  # every net's penultimate features of the unlabeled pool
        features = np.stack([r["pool_features"][unlabeled] for r in records])  # (T, U, dim)
        if method == "lewis":
            return strategies.lewis_sampling(features, batch, rng).positions
        # One-shot: all al_iters - 1 batches drawn at once, by the paper's sampler (lewis_oneshot's
        # default); iteration 1 holds the first B of them.
        return strategies.lewis_sampling(features, batch * (QUICK.al_iters - 1), rng,
                                         sampler="with_replacement").positions[:batch]
    snapshots = np.stack([r["snapshot_labels"] for r in records])  # (T, K, U)
    if method == "DIAM_qp":  # and every net's penultimate features of the unlabeled pool
        features = np.stack([r["pool_features"][unlabeled] for r in records])  # (T, U, dim)
        return strategies.diam_qp(snapshots, features, batch, rng)
    return {"CAL": strategies.cal, "DIAM": strategies.diam}[method](snapshots, batch, rng)


def test_recorded_outputs_differ_between_nets_epochs_and_examples(tiny_iteration):
    # Else the test below could not tell one net's arrays, or one axis, from another.
    _, _, records = _recorded(tiny_paths(tiny_iteration), "DIAM")
    snapshots = np.stack([r["snapshot_labels"] for r in records])
    assert (snapshots[0] != snapshots[1]).any() and (snapshots[:, 0] != snapshots[:, -1]).any()
    assert all(len(np.unique(r["snapshot_labels"][-1])) > 1 for r in records)
    assert not np.array_equal(records[0]["unlabeled_probs"], records[1]["unlabeled_probs"])


@pytest.mark.parametrize("method", METHODS)
def test_al_select_writes_the_batch_the_strategy_picks_from_the_recorded_arrays(tiny_runs, method):
    runs = tiny_runs
    paths = tiny_paths(runs)
    labeled, unlabeled, recorded = _recorded(paths, method)
    args = tiny_args(runs, "--method", method, "--al_iter", 0)

    result = run_script_here("al_select.py", *args)
    assert result.returncode == 0, result.stderr
    if method == "DIAM_qp":  # the user is told which route solved the QP
        n_subsample = (POOL - TINY["initial_labeled"]) // 5
        assert f"note: DIAM_qp's QP (n = {n_subsample}) answered by the certified route" in result.stderr
    # What training recorded is read, not changed. Iteration 0 records features for net 0
    # only: DIAM_qp's and lewis's selections compute the other nets' once and keep them beside.
    _, _, records = _recorded(paths, method)
    for before, after in zip(recorded, records):
        assert all(np.array_equal(before[k], after[k]) for k in before)
    run = Run(settings_from_args(cli.parser("test").parse_args(map(str, args))))
    positions = _strategy_batch(method, labeled, unlabeled, records, selection_rng(run), run)
    assert len(positions) == TINY["query_batch"]
    with np.load(paths.indices(T, method, 1)) as z:
        # The new labeled set is the old one, then the batch in the order the strategy picked it.
        np.testing.assert_array_equal(z["labeled"], np.concatenate([labeled, unlabeled[positions]]))
        np.testing.assert_array_equal(z["unlabeled"], np.delete(unlabeled, positions))


def test_original_uncertainty_reaches_the_strategy_through_al_select(tiny_runs):
    runs = tiny_runs
    paths = tiny_paths(runs)
    args = tiny_args(runs, "--method", "margin", "--al_iter", 0, "--original_uncertainty")
    parsed = cli.parser("test").parse_args(map(str, args))
    # The folder as if trained with the flag (training is the same; only selection reads it),
    # written before the settings are resolved: they refuse a folder made in another mode.
    write_json(paths.config_file, run_config("digits", preset_from_args(parsed)))
    run = Run(settings_from_args(parsed))
    labeled, unlabeled, records = _recorded(paths, "margin")
    inputs = Pool(len(unlabeled), unlabeled_probs=np.stack([r["unlabeled_probs"] for r in records]))
    quirk = METHODS["margin"].select(inputs, TINY["query_batch"], selection_rng(run),
                                     UncertaintySettings(original_uncertainty=True))
    corrected = _strategy_batch("margin", labeled, unlabeled, records, None)
    assert set(quirk) != set(corrected)

    assert run_script_here("al_select.py", *args).returncode == 0
    with np.load(paths.indices(T, "margin", 1)) as z:
        np.testing.assert_array_equal(z["labeled"], np.concatenate([labeled, unlabeled[quirk]]))


def test_selection_is_reproducible_for_the_same_dataset_method_and_iteration(tiny_runs):
    runs = tiny_runs
    picked = []
    for _ in range(2):
        assert run_script_here("al_select.py", *tiny_args(runs, "--method", "DIAM", "--al_iter", 0, "--redo")) \
            .returncode == 0
        picked.append(tiny_paths(runs).indices(T, "DIAM", 1).read_bytes())
    assert picked[0] == picked[1]


def test_selection_reads_what_training_recorded_and_runs_no_net(tiny_runs, monkeypatch):
    runs = tiny_runs
    paths = tiny_paths(runs)
    passes = []
    real_predict = selection_inputs.predict
    monkeypatch.setattr(selection_inputs, "predict", lambda *a, **k: passes.append(1) or real_predict(*a, **k))
    records = {p: p.read_bytes() for p in paths.model_dir(T, "random", 0).glob("*_pool.npz")}
    for method in ("entropy", "coreset", "CAL"):
        assert run_script_here("al_select.py", *tiny_args(runs, "--method", method, "--al_iter", 0)).returncode == 0
        assert paths.indices(T, method, 1).exists()
    assert passes == [] and {p: p.read_bytes() for p in records} == records
    # The spy sees a pass when one is needed: net 1's probabilities gone, entropy must compute them.
    pool_file = paths.pool_predictions(T, "entropy", 0, 1)
    with np.load(pool_file) as z:
        kept = {k: z[k] for k in z.files if k != "unlabeled_probs"}
    pool_file.unlink()
    np.savez(pool_file, **kept)
    assert run_script_here("al_select.py", *tiny_args(runs, "--method", "entropy", "--al_iter", 0, "--redo")) \
        .returncode == 0
    assert passes == [1]


def test_batch_larger_than_the_pool_takes_what_is_left(tiny_runs):
    runs = tiny_runs
    result = run_script_here("al_select.py", *tiny_args(runs, "--method", "margin", "--al_iter", 0,
                                                       "--batch_size", 5000))
    assert result.returncode == 0, result.stderr
    labeled, unlabeled = read_indices(tiny_paths(runs).indices(T, "margin", 1), "digits", POOL)
    assert len(unlabeled) == 0 and sorted(labeled) == list(range(POOL))
    assert "fewer than the batch" in result.stderr


# ------------------------------------------------------------------ clean errors (exit code 2, in a real process)
def _script(name, *args, cwd):
    return run_script(name, *args, "--preset", "quick", cwd=cwd)


def test_iteration_without_a_selection_is_a_clean_error(workdir):
    result = _script("train_net.py", "--net_id", 0, "--dataset", "digits", "--al_iter", 2, "--method", "DIAM",
                     "--model_num", 1, cwd=workdir)
    assert_clean_error(result, "no selection has been written for al_iter 2", "al_select.py --al_iter 1")


def test_missing_dataset_offline_is_a_clean_error_with_the_way_out(workdir):
    result = _script("train_net.py", "--net_id", 0, "--dataset", "mnist", "--al_iter", 0, "--model_num", 1,
                     cwd=workdir)
    assert_clean_error(result, "could not be downloaded", "train-images-idx3-ubyte", "--data_root",
                       "use --dataset digits")
    # The way out it names works: the same command with --dataset digits gets past the data.
    way_out = _script("train_net.py", "--net_id", 0, "--dataset", "digits", "--al_iter", 0, "--model_num", 1,
                      "--epochs", 1, "--initial_labeled", 20, "--pool_size", 60, "--test_size", 20, cwd=workdir)
    assert way_out.returncode == 0, way_out.stderr


def test_testing_untrained_nets_names_the_missing_training(workdir):
    result = _script("test_multi_models.py", "--dataset", "digits", "--method", "random", "--al_iter", 0,
                     "--model_num", 1, cwd=workdir)
    assert_clean_error(result, "has not been trained", "train_net.py --net_id 0")


def test_results_never_go_into_the_paper_folder(workdir):
    # Checked before the step (the finished-outputs check) and, with --redo, by the step itself.
    for redo in ([], ["--redo"]):
        result = _script("test_multi_models.py", "--dataset", "digits", "--method", "random", "--al_iter", 0,
                         "--model_num", 1, "--results_dir", PROJECT / "extracted_results", *redo, cwd=workdir)
        assert_clean_error(result, "paper's published results", "Point --results_dir at a folder outside it")
    # Nor do runs (checkpoints, index files and their default results tree): a --work_dir inside is named.
    for script in ("train_net.py", "test_multi_models.py"):
        result = _script(script, "--dataset", "digits", "--al_iter", 0, "--model_num", 1,
                         *(["--net_id", 0] if script == "train_net.py" else ["--method", "random"]),
                         "--work_dir", PROJECT / "extracted_results" / "runs", cwd=workdir)
        assert_clean_error(result, "paper's published results", "Point --work_dir at a folder outside it")
        assert "--results_dir" not in result.stderr and not (PROJECT / "extracted_results" / "runs").exists()


def test_changed_settings_in_one_run_folder_are_refused(tiny_runs, tmp_path):
    runs = tiny_runs
    result = run_script("train_net.py", "--net_id", 0, *tiny_args(runs, "--al_iter", 0, "--epochs", 3, "--redo"),
                        cwd=tmp_path)
    assert_clean_error(result, "other settings", "epochs: folder has 4, you asked 3")


# ------------------------------------------------------------------ the loop
# The loop's cost is mostly starting its steps: its nets train a few steps only.
LOOP_ARGS = ["--al_iters", "2", "--pool_size", "200", "--test_size", "100", "--initial_labeled", "40",
             "--query_batch", "10", "--epochs", "2", "--train_batch", "20", "--image_size", "32"]


def _loop(home, methods="DIAM", env=None, model_num=T):
    return subprocess.run(
        ["bash", str(PROJECT / "iter_all.sh"), "cpu", str(model_num)], cwd=home, capture_output=True, text=True,
        timeout=900, env={**os.environ, "PYTHON": sys.executable, "PRESET": "quick", "DATASETS": "digits",
                          "METHODS": methods, "DIAM_WORK_DIR": str(home / "runs"),
                          "EXTRA_ARGS": " ".join(LOOP_ARGS), **(env or {})})


def test_iter_all_runs_the_loop_and_resumes_after_losing_the_last_step(tmp_path):
    # Two training processes, one core each: the everyday use of PARALLEL (the sequential
    # loop is the reference run of test_reliability.py). One method keeps it short.
    parallel = {"PARALLEL": "2"}
    first = _loop(tmp_path, env=parallel)
    assert first.returncode == 0, first.stderr
    results = tmp_path / "runs" / "quick" / "extracted_results" / str(T) / "digits"
    final = (results / "DIAM" / "1" / "performances.txt").read_text()
    assert np.loadtxt(results / "DIAM" / "1" / "performances.txt").shape == (T, 2)
    # Lose the last step's outputs (and one of its checkpoints), then run the same command.
    iter1 = tmp_path / "runs" / "quick" / "digits" / "models" / f"T{T}" / "DIAM" / "iter1"
    (results / "DIAM" / "1" / "performances.txt").unlink()
    (iter1 / "net1.pt").unlink()
    second = _loop(tmp_path, env=parallel)
    assert second.returncode == 0, second.stderr
    # Exactly the lost work is redone: net 1 of iteration 1 is trained again, nothing else is.
    trained = re.findall(r"^net (\d+) trained on .*: (.*)$", second.stdout, re.M)
    assert trained == [("1", str(iter1 / "net1.pt"))], second.stdout
    assert f"already done: {iter1 / 'net0.pt'}" in second.stdout
    assert (results / "DIAM" / "1" / "performances.txt").read_text() == final


@pytest.mark.parametrize("parallel", ["1", "2"])
def test_iter_all_stops_at_the_first_failing_step(tmp_path, parallel):
    result = _loop(tmp_path, methods="random", env={"DATASETS": "mnist", "PARALLEL": parallel})
    assert result.returncode == 1
    assert "step failed" in result.stderr and "could not be downloaded" in result.stderr
    assert "test_multi_models.py" not in result.stdout + result.stderr  # nothing ran after the failed training


def _assert_refused_before_any_step(result, home, *fragments):
    """iter_all.sh's bad input: one paragraph and exit 2, no traceback, and no step ran (no run folder)."""
    assert_clean_error(result, *fragments)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stdout == "" and not (home / "runs").exists()


@pytest.mark.parametrize("env, fragments", [
    ({"PRESET": "quik"}, ["unknown preset 'quik'", "quick"]),
    ({"EXTRA_ARGS": "--epochs five"}, ["EXTRA_ARGS: argument --epochs: invalid int value: 'five'", "--help"]),
    ({"EXTRA_ARGS": "--epochz 5"}, ["EXTRA_ARGS: unrecognized arguments: --epochz 5", "--help"]),
    ({"EXTRA_ARGS": "--help"}, ["EXTRA_ARGS: unrecognized arguments: --help"]),
    ({"EXTRA_ARGS": "--epochs 0"}, ["--epochs must be positive"]),
    ({"EXTRA_ARGS": "--nets ofa0 resnt18"}, ["--nets names an unknown target model, 'resnt18'"]),
])
def test_iter_all_refuses_a_bad_preset_or_extra_args_before_any_step(tmp_path, env, fragments):
    extra = " ".join([*LOOP_ARGS, env.pop("EXTRA_ARGS", "")])  # the loop's small sizes, then the mistake
    result = _loop(tmp_path, methods="random", env={**env, "EXTRA_ARGS": extra})
    _assert_refused_before_any_step(result, tmp_path, *fragments)


@pytest.mark.parametrize("extra, flag, variable", [
    ("--seed 3", "--seed", "SEEDS=3"),  # iter_all.sh's --seed S came after EXTRA_ARGS: seed 3 silently ran as 0
    ("--se 3", "--seed", "SEEDS=3"),  # as the steps read it: an abbreviation of --seed
    ("--dataset fmnist", "--dataset", "DATASETS="), ("--method DIAM", "--method", "METHODS="),
    ("--al_iter 1", "--al_iter", "ITERS="), ("--model_num 3", "--model_num", "bash iter_all.sh cpu 4"),
])
def test_iter_all_refuses_in_extra_args_the_flags_it_gives_every_step(tmp_path, extra, flag, variable):
    result = _loop(tmp_path, methods="random", env={"EXTRA_ARGS": " ".join([*LOOP_ARGS, extra])})
    _assert_refused_before_any_step(result, tmp_path, f"EXTRA_ARGS names {flag},", f"Drop {flag}", variable)


def test_iter_all_takes_more_than_12_target_models_when_extra_args_names_them(tmp_path):
    refused = _loop(tmp_path, methods="random", model_num=13)
    _assert_refused_before_any_step(refused, tmp_path, "T, iter_all.sh's second argument", "between 1 and 12",
                                    "got 13", '--nets goes in EXTRA_ARGS')
    nets = [f"ofa{n}" for n in range(12)] + ["resnet18"]
    assert cli.iter_all_plan(["13", "digits", "DIAM", "", "--preset", "quick", "--nets", *nets]).splitlines()[1:] == \
        ["digits", "DIAM"]
    with pytest.raises(UserError, match="--nets names 13 target model.*--model_num is 12"):
        cli.iter_all_plan(["12", "digits", "DIAM", "", "--preset", "quick", "--nets", *nets])
    # The script itself no longer stops T = 13 (it stopped every T over 12, whatever EXTRA_ARGS said).
    steps = _recorded_loop(tmp_path, "cpu", 13, "1", env={"EXTRA_ARGS": "--nets " + " ".join(nets)})
    assert [_net_ids(s) for s in steps if "train_net.py" in s and "--al_iter 0" in s] == \
        [" ".join(map(str, range(13)))]


@pytest.mark.parametrize("datasets, methods, fragments", [
    # A method's typo, which iteration 0's training used to come before...
    ("digits", "random DIAMM", ["METHODS: unknown method 'DIAMM'", "least_conf"]),
    # ...and a typo in the last dataset, which the whole run of the first used to come before.
    ("digits fmnistt", "random", ["DATASETS: unknown dataset 'fmnistt'", "emnistlet"]),
    ("digits missing/dataset.json", "random", ["DATASETS: ", "missing/dataset.json"]),
])
def test_iter_all_checks_every_dataset_and_method_before_any_step(tmp_path, datasets, methods, fragments):
    result = _loop(tmp_path, methods=methods, env={"DATASETS": datasets})
    _assert_refused_before_any_step(result, tmp_path, *fragments)


@pytest.mark.parametrize("iters", ["0 2", "0 one", "-1"])
def test_iter_all_checks_iters_before_iteration_0_is_trained(tmp_path, iters):
    # The loop's preset has 2 iterations (LOOP_ARGS): iteration 2 failed only once iteration 0 had trained.
    result = _loop(tmp_path, methods="random", env={"ITERS": iters})
    _assert_refused_before_any_step(result, tmp_path, f"ITERS: '{iters.split()[-1]}'", "iterations 0 to 1")


def test_iter_all_runs_the_papers_datasets_and_seven_methods_by_default():
    # The lists iter_all.sh wrote out itself before it took them from the Python constants.
    assert cli.iter_all_plan(["2", "", "", "", "--preset", "quick"]).splitlines() == \
        ["3", "mnist kmnist", "random least_conf margin entropy coreset CAL DIAM"]
    plan = cli.iter_all_plan(["2", "digits", "DIAM lewis", "0 1", "--preset", "quick", "--al_iters", "2"])
    assert plan.splitlines() == ["1", "digits", "DIAM lewis"]


RECORDING_PYTHON = """#!/bin/bash
# Stands in for python: the preset has 2 iterations (the plan: last iteration 1, DATASETS and METHODS
# as given); each step logs where it would run, then succeeds.
if [ "$1" = "-c" ]; then printf '1\\n%s\\n%s\\n' "$DATASETS" "$METHODS"; exit 0; fi
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


def test_finished_steps_are_skipped_without_loading_torch(tiny_runs, tmp_path):
    runs = tiny_runs
    steps = {"train_net.py": ["--net_id", 0, 1, "--al_iter", 0],
             "test_multi_models.py": ["--method", "DIAM", "--al_iter", 0],
             "al_select.py": ["--method", "DIAM", "--al_iter", 0]}
    for script in ("test_multi_models.py", "al_select.py"):  # finish the two steps after training
        assert run_script_here(script, *tiny_args(runs, *steps[script])).returncode == 0
    broken = tmp_path / "no_torch" / "torch"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('torch must not be imported to skip a finished step')\n")
    for script, args in steps.items():
        result = run_script(script, *tiny_args(runs, *args), cwd=tmp_path, env={"PYTHONPATH": str(broken.parent)})
        assert result.returncode == 0, (script, result.stderr)
        assert result.stdout.count("already done") == (2 if script == "train_net.py" else 1), result.stdout
    # The stand-in torch does stop a step that has work to do.
    result = run_script("al_select.py", *tiny_args(runs, *steps["al_select.py"], "--redo"), cwd=tmp_path,
                        env={"PYTHONPATH": str(broken.parent)})
    assert result.returncode == 1 and "torch must not be imported" in result.stderr
