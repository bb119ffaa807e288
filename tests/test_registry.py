"""One registry per concept: a strategy with a setting of its own, and a built-in dataset, are each
added by one entry (docs/layout.md, 'Adding a strategy' and 'Adding a built-in dataset'), and the
command line, the steps and the tables take them from there."""
from dataclasses import dataclass

import numpy as np
import pytest

from conftest import run_script, run_script_here
from diam import cli, results
from diam.data import load_dataset
from diam.datasets import DATASETS, BuiltinDataset
from diam.methods import METHODS, Method, setting
from diam.paths import RunPaths, read_indices
from diam.settings import resolve_dataset

TINY = ["--dataset", "digits", "--model_num", "2", "--preset", "quick", "--pool_size", "200", "--test_size", "50",
        "--initial_labeled", "30", "--query_batch", "10", "--epochs", "1", "--train_batch", "15", "--image_size", "32",
        "--al_iters", "2", "--device", "cpu"]


# ------------------------------------------------------------ a toy strategy, as a user would add one

@dataclass(frozen=True)
class LeastSureSettings:
    trusted_model: int = setting(0, "--trusted_model", "least_sure only: whose probabilities rank the pool",
                                 check=lambda n: None if n >= 0 else "--trusted_model must be 0 or more")


SEEN = []  # the settings each call received


def least_sure(pool, batch_size, rng, settings: LeastSureSettings):
    """The B examples whose top probability under one chosen model is lowest."""
    SEEN.append(settings)
    top = pool.unlabeled_probs[settings.trusted_model].max(axis=1)
    return np.argsort(top, kind="stable")[:batch_size]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Iteration 0's two nets, trained once at a tiny size (iteration 0 records every input)."""
    home = tmp_path_factory.mktemp("registry")
    result = run_script("train_net.py", "--net_id", 0, 1, "--al_iter", 0, *TINY, "--work_dir", home / "runs", cwd=home)
    assert result.returncode == 0, result.stderr
    return home / "runs"


def test_a_registered_toy_strategy_gets_its_own_setting_through_al_select(trained, monkeypatch):
    monkeypatch.setitem(METHODS, "least_sure", Method(least_sure, ("probs",), LeastSureSettings))
    SEEN.clear()
    help_text = run_script_here("al_select.py", "--help").stdout
    assert "least_sure" in help_text and "--trusted_model" in help_text

    args = ["--method", "least_sure", "--al_iter", "0", *TINY, "--work_dir", trained]
    result = run_script_here("al_select.py", *args, "--trusted_model", "1")
    assert result.returncode == 0, result.stderr
    assert SEEN == [LeastSureSettings(trusted_model=1)]  # the flag reached the strategy

    paths = RunPaths(trained, "quick", "digits")
    labeled, unlabeled = read_indices(paths.indices(2, "least_sure", 0), "digits", 200)
    with np.load(paths.pool_predictions(2, "least_sure", 0, 1)) as recorded:  # net 1's, as training kept them
        expected = np.argsort(recorded["unlabeled_probs"].max(axis=1), kind="stable")[:10]
    new_labeled, new_unlabeled = read_indices(paths.indices(2, "least_sure", 1), "digits", 200)
    np.testing.assert_array_equal(new_labeled, np.concatenate([labeled, unlabeled[expected]]))
    assert len(new_unlabeled) == len(unlabeled) - 10

    refused = run_script_here("al_select.py", *args, "--trusted_model", "-1", "--redo")
    assert refused.returncode == 2 and "--trusted_model must be 0 or more" in refused.stderr


def test_an_unregistered_method_is_refused_by_the_command_line():
    result = run_script_here("al_select.py", "--method", "least_sure", "--al_iter", "0", *TINY)
    assert result.returncode == 2 and "unknown method 'least_sure'" in result.stderr


# ------------------------------------------------------------ a built-in dataset in one entry

def test_a_dataset_registered_in_one_entry_is_checked_loaded_and_named(monkeypatch):
    monkeypatch.setitem(DATASETS, "digits_again", BuiltinDataset("sklearn_digits", "Handwritten digits"))
    assert resolve_dataset("digits_again") == ("digits_again", None)
    again, digits = load_dataset("digits_again"), load_dataset("digits")
    assert again.name == "digits_again" and again.n_classes == 10
    assert (again.pool_images == digits.pool_images).all() and (again.test_labels == digits.test_labels).all()
    assert "digits_again" in cli.parser("test").format_help()
    assert results.dataset_display_name("digits_again") == "Handwritten digits"
    assert results.dataset_display_name("digits") == "digits"  # an entry without a display name: its own


def test_every_builtin_dataset_has_a_loader_and_its_sources_are_registered():
    from diam.data import LOADERS

    for name, entry in DATASETS.items():
        assert entry.source in LOADERS, name
        if entry.source == "test_split":
            assert DATASETS[entry.of].source == "torchvision", name
