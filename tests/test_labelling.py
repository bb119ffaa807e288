"""Issue 25, item 3: a person labels what al_select.py picks; the simulation (labels known) is unchanged."""
import csv
import io
import json

import numpy as np
import pytest
import torch

from conftest import assert_clean_error, folder_state, linked_copy, run_script_here
from diam.data import load_dataset
from diam.errors import UserError
from diam.labels import read_rows, write_sheet
from diam.paths import RunPaths, read_indices
from png_datasets import write_png_dataset

CLASSES = [str(c) for c in range(10)]
POOL, TEST, INITIAL, BATCH = 200, 100, 30, 10
TINY = ["--model_num", 2, "--preset", "quick", "--pool_size", POOL, "--test_size", TEST, "--initial_labeled", INITIAL,
        "--query_batch", BATCH, "--epochs", 2, "--train_batch", 15, "--image_size", 32, "--al_iters", 2,
        "--device", "cpu"]


def _step(script, dataset, runs, *args):
    return run_script_here(script, "--dataset", dataset, "--work_dir", runs, *TINY, *args)


def _ok(result):
    assert result.returncode == 0, result.stderr
    return result


TRAIN1 = ("train_net.py", "--method", "DIAM", "--al_iter", 1, "--net_id", 0, 1)


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """Digits as PNGs, run twice: a simulation (every pool label in the manifest) through iteration 1,
    and a person's run (labels for the initial set only) up to its first selection."""
    home = tmp_path_factory.mktemp("labelling")
    digits = load_dataset("digits", pool_size=POOL, test_size=TEST)
    truth = write_png_dataset(home / "pngs", "hand", digits.pool_images.numpy(), digits.pool_labels.tolist(),
                              digits.test_images.numpy(), digits.test_labels.tolist(), CLASSES)
    simulated = home / "simulated"
    _ok(_step("train_net.py", truth, simulated, "--al_iter", 0, "--net_id", 0, 1))
    _ok(_step("al_select.py", truth, simulated, "--method", "DIAM", "--al_iter", 0))
    _ok(_step(*TRAIN1[:1], truth, simulated, *TRAIN1[1:]))
    _ok(_step("test_multi_models.py", truth, simulated, "--method", "DIAM", "--al_iter", 1))
    # The person knows the labels of the initial set only (the same images: the simulation drew them):
    # a second dataset file of the same name beside the first, with its own pool manifest.
    initial, _ = read_indices(RunPaths(simulated, "quick", "hand").indices(2, "DIAM", 0), "hand", POOL)
    paths = [f"pool/{i:05d}.png" for i in range(POOL)]
    write_sheet(home / "pngs" / "person_pool.csv", paths,
                [CLASSES[k] if i in set(initial) else "" for i, k in enumerate(digits.pool_labels.tolist())])
    person_file = home / "pngs" / "person.json"
    person_file.write_text(json.dumps({**json.loads(truth.read_text()), "pool": "person_pool.csv"}))
    person = home / "person"
    _ok(_step("train_net.py", person_file, person, "--al_iter", 0, "--net_id", 0, 1))
    selected = _ok(_step("al_select.py", person_file, person, "--method", "DIAM", "--al_iter", 0))
    truth_labels = {p: CLASSES[k] for p, k in zip(paths, digits.pool_labels.tolist())}
    return {"simulated": simulated, "person": person, "person_file": person_file, "truth": truth_labels,
            "selected": selected}


def _sheet(runs):
    return RunPaths(runs, "quick", "hand").label_sheet(2, "DIAM", 1)


def _rows(path):
    return list(csv.reader(io.StringIO(path.read_text())))


def _write(path, rows):
    """Replace the file (the copies share their files by hard links: never write into one)."""
    path.unlink(missing_ok=True)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    path.write_text(out.getvalue())


def _filled(loop):
    header, *rows = _rows(_sheet(loop["person"]))
    return [header] + [[p, loop["truth"][p]] for p, _ in rows]


def test_al_select_writes_the_selected_images_with_empty_labels_beside_its_index_file(loop):
    sheet = _sheet(loop["person"])
    assert sheet.parent == RunPaths(loop["person"], "quick", "hand").indices(2, "DIAM", 1).parent
    assert str(sheet) in loop["selected"].stdout
    labeled, _ = read_indices(RunPaths(loop["person"], "quick", "hand").indices(2, "DIAM", 1), "hand", POOL)
    header, *rows = _rows(sheet)
    assert header == ["path", "label"]
    assert rows == [[f"pool/{i:05d}.png", ""] for i in labeled[INITIAL:]]
    again = _ok(_step("al_select.py", loop["person_file"], loop["person"], "--method", "DIAM", "--al_iter", 0))
    assert f"already done: {RunPaths(loop['person'], 'quick', 'hand').indices(2, 'DIAM', 1)}" in again.stdout
    assert f"to label: {sheet}" in again.stdout  # asked again, it still says where the images to label are


def test_labels_filled_in_from_the_truth_give_the_simulated_runs_files(loop, tmp_path):
    runs = linked_copy(loop["person"], tmp_path / "person")
    header, *rows = _filled(loop)
    _write(_sheet(runs), [header, *rows[::-1]])  # rows are matched by path: any order will do
    _ok(_step(*TRAIN1[:1], loop["person_file"], runs, *TRAIN1[1:]))
    _ok(_step("test_multi_models.py", loop["person_file"], runs, "--method", "DIAM", "--al_iter", 1))
    simulated, person = RunPaths(loop["simulated"], "quick", "hand"), RunPaths(runs, "quick", "hand")
    for al_iter in (0, 1):
        for name in ("labeled", "unlabeled"):
            with np.load(simulated.indices(2, "DIAM", al_iter)) as a, np.load(person.indices(2, "DIAM", al_iter)) as b:
                np.testing.assert_array_equal(a[name], b[name])
        for net_id in (0, 1):
            a = torch.load(simulated.checkpoint(2, "DIAM", al_iter, net_id), weights_only=True)
            b = torch.load(person.checkpoint(2, "DIAM", al_iter, net_id), weights_only=True)
            assert a["info"] == b["info"] and a["state_dict"].keys() == b["state_dict"].keys()
            assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
            with np.load(simulated.pool_predictions(2, "DIAM", al_iter, net_id)) as a, \
                    np.load(person.pool_predictions(2, "DIAM", al_iter, net_id)) as b:
                assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    assert person.performances(2, "DIAM", 1).read_bytes() == simulated.performances(2, "DIAM", 1).read_bytes()


def test_selecting_again_keeps_a_sheet_being_filled_and_never_overwrites_another(loop, tmp_path):
    runs = linked_copy(loop["person"], tmp_path / "person")
    sheet = _sheet(runs)
    filled = _filled(loop)
    _write(sheet, filled)
    _ok(_step("al_select.py", loop["person_file"], runs, "--method", "DIAM", "--al_iter", 0, "--redo"))
    assert _rows(sheet) == filled
    other = [filled[0], ["pool/99999.png", "3"], *filled[2:]]
    _write(sheet, other)
    before = folder_state(runs)
    refused = _step("al_select.py", loop["person_file"], runs, "--method", "DIAM", "--al_iter", 0, "--redo")
    assert_clean_error(refused, str(sheet), "lists other images", "not overwritten")
    assert folder_state(runs) == before


def _missing_label(rows):
    rows[3][1] = ""
    return rows


def _unknown_class(rows):
    rows[2][1] = "12"
    return rows


CASES = {  # how the sheet is spoilt, and what the error must say
    "missing label": (lambda sheet, rows: _write(sheet, _missing_label(rows)), ["no label at line(s) 4"]),
    "unknown class": (lambda sheet, rows: _write(sheet, _unknown_class(rows)),
                      ["not classes at line 3 '12'", "the classes: 0, 1, 2"]),
    "missing file": (lambda sheet, rows: sheet.unlink(), ["does not exist", "al_select.py --al_iter 0 --redo"]),
    "missing row": (lambda sheet, rows: _write(sheet, rows[:5] + rows[6:]), ["no row for 1 selected image(s)"]),
    "another image": (lambda sheet, rows: _write(sheet, rows[:5] + [["pool/99999.png", "3"]] + rows[6:]),
                      ["no row for 1 selected image(s)", "images that were not selected at line(s) 6"]),
    "truncated": (lambda sheet, rows: (_write(sheet, rows), sheet.write_bytes(sheet.read_bytes()[:100])),
                  ["cut short"]),
}


@pytest.mark.parametrize("case", CASES)
def test_a_sheet_without_every_label_is_refused_naming_the_file_and_rows_and_nothing_is_written(loop, tmp_path,
                                                                                              case):
    runs = linked_copy(loop["person"], tmp_path / "person")
    spoil, fragments = CASES[case]
    spoil(_sheet(runs), _filled(loop))
    before = folder_state(runs)
    refused = _step(*TRAIN1[:1], loop["person_file"], runs, *TRAIN1[1:])
    assert_clean_error(refused, str(_sheet(runs)), *fragments)
    assert folder_state(runs) == before


def test_the_first_training_needs_as_many_known_labels_as_the_initial_set(loop, tmp_path):
    result = _step("train_net.py", loop["person_file"], tmp_path / "runs", "--al_iter", 0, "--net_id", 0,
                   "--initial_labeled", INITIAL + 1)
    assert_clean_error(result, f"only {INITIAL} of the pool's {POOL} images have a label",
                       f"--initial_labeled {INITIAL} or less")
    assert not (tmp_path / "runs").exists()


def test_a_spreadsheets_empty_cells_are_not_rows_or_columns(tmp_path):
    """A sheet saved by a spreadsheet may carry an empty column after the label, and rows of empty
    cells below the last one; neither is a row of its own. A third field that holds something is still refused."""
    sheet = tmp_path / "iter1_labels.csv"
    sheet.write_bytes("\ufeffPath,Label,\r\npool/00001.png,3,\r\npool/00002.png,,\r\n,,\r\n, ,\r\n".encode())
    assert read_rows(sheet, "the sheet") == [(2, "pool/00001.png", "3"), (3, "pool/00002.png", "")]
    sheet.write_text("path,label\npool/00001.png,3,extra\n")
    with pytest.raises(UserError, match=r"without exactly two fields .* at line\(s\) 2"):
        read_rows(sheet, "the sheet")
