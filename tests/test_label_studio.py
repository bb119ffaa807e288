"""Issue 35: a selection labelled in Label Studio. al_select.py writes the tasks and the labelling
configuration; the next training reads the project's export (JSON, JSON-MIN or CSV) instead of
the sheet, with the sheet's refusals. The exports in fixtures/label_studio/ were made by Label
Studio 1.23 itself (fixtures/label_studio/make.sh) from the selection this module's fixture makes."""
import csv
import io
import json
import shutil
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
import torch

from conftest import assert_clean_error, folder_state, linked_copy, run_script_here
from diam import label_studio
from diam.paths import RunPaths, read_indices
from png_datasets import LS_CLASSES, LS_POOL, LS_STEP_ARGS, label_studio_selection

FIXTURES = Path(__file__).parent / "fixtures" / "label_studio"
FORMATS = ["json", "min.json", "csv"]  # the fixtures' suffixes: Label Studio's JSON, JSON-MIN and CSV exports


def _ok(result):
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def selection(tmp_path_factory):
    made = label_studio_selection(tmp_path_factory.mktemp("label_studio"), lambda *a: _ok(run_script_here(*a)))
    made["paths"] = RunPaths(made["runs"], "quick", "hand")
    return made


def _train(selection, runs):
    return run_script_here("train_net.py", "--dataset", selection["dataset"], "--work_dir", runs, *LS_STEP_ARGS,
                           "--method", "random", "--al_iter", 1, "--net_id", 0, 1)


def _selected(selection):
    """The selected images in the sheet's order."""
    rows = list(csv.reader(io.StringIO(selection["paths"].label_sheet(2, "random", 1).read_text())))
    return [path for path, _ in rows[1:]]


def _fixture_tasks():
    """The tasks the fixtures were made from, in import order: the roundtrip's skipped, disputed and
    untouched tasks are the first three, then the one skipped and labelled, then the agreed one."""
    return [t["data"]["pool_path"] for t in json.loads((FIXTURES / "tasks.json").read_text())]


def _export_path(paths, suffix):
    json_export, csv_export = paths.label_studio_exports(2, "random", 1)
    return csv_export if suffix == "csv" else json_export


def test_al_select_writes_tasks_with_the_models_votes_and_the_configuration_beside_the_sheet(selection):
    paths = selection["paths"]
    tasks_file = paths.label_studio_tasks(2, "random", 1)
    assert tasks_file.parent == paths.label_sheet(2, "random", 1).parent
    assert str(tasks_file) in selection["selected"].stdout
    tasks = json.loads(tasks_file.read_text())
    images = _selected(selection)
    assert [t["data"]["pool_path"] for t in tasks] == images == _fixture_tasks()  # what Label Studio was given
    labeled, unlabeled = read_indices(paths.indices(2, "random", 0), "hand", LS_POOL)
    new, _ = read_indices(paths.indices(2, "random", 1), "hand", LS_POOL)
    positions = np.searchsorted(unlabeled, new[len(labeled):])
    votes = []
    for net_id in (0, 1):
        with np.load(paths.pool_predictions(2, "random", 0, net_id)) as recorded:
            votes.append(recorded["unlabeled_probs"][positions].argmax(1))
    for k, task in enumerate(tasks):
        data, (prediction,) = task["data"], task["predictions"]
        assert data["image"] == f"/data/local-files/?d=pngs/{images[k]}"
        assert data["votes"] == {"net0 ofa0": LS_CLASSES[votes[0][k]], "net1 ofa1": LS_CLASSES[votes[1][k]]}
        agree = votes[0][k] == votes[1][k]
        assert data["majority"] == LS_CLASSES[min(votes[0][k], votes[1][k])]  # a tie: the class listed first
        assert data["disagreement"] == prediction["score"] == (0.0 if agree else 0.5)
        assert prediction["result"] == [{"from_name": "label", "to_name": "image", "type": "choices",
                                         "value": {"choices": [data["majority"]]}}]
    config = ElementTree.fromstring(paths.label_studio_config.read_text())
    (image,), (choices,) = config.findall("Image"), config.findall("Choices")
    assert (image.get("name"), image.get("value")) == ("image", "$image")
    assert (choices.get("name"), choices.get("toName"), choices.get("choice")) == ("label", "image", "single")
    assert [c.get("value") for c in choices.findall("Choice")] == LS_CLASSES
    assert paths.label_studio_config.read_text() == (FIXTURES / "label_studio.xml").read_text()


def test_the_majority_is_the_most_voted_class_ties_to_the_first_listed_and_the_score_the_share_against():
    assert label_studio.majority(np.array([4, 2])) == (2, 0.5)
    assert label_studio.majority(np.array([7, 3, 7])) == (7, pytest.approx(1 / 3))
    assert label_studio.majority(np.array([5, 5, 5, 5])) == (5, 0.0)


def test_without_recorded_predictions_the_nets_predict_the_selected_images_themselves(selection, tmp_path):
    runs = linked_copy(selection["runs"], tmp_path / "runs")
    paths = RunPaths(runs, "quick", "hand")
    for net_id in (0, 1):
        paths.pool_predictions(2, "random", 0, net_id).unlink()
    tasks = paths.label_studio_tasks(2, "random", 1)
    before = json.loads(tasks.read_text())
    tasks.unlink()
    _ok(run_script_here("al_select.py", "--dataset", selection["dataset"], "--work_dir", runs, *LS_STEP_ARGS,
                        "--method", "random", "--al_iter", 0, "--redo"))
    assert json.loads(tasks.read_text()) == before


@pytest.mark.parametrize("suffix", FORMATS)
def test_each_export_format_gives_the_classes_the_annotators_chose(selection, suffix):
    images = _selected(selection)
    given = label_studio.read_export(FIXTURES / f"clean.{suffix}", images, LS_CLASSES)
    assert [LS_CLASSES[k] for k in given] == [selection["truth"][p] for p in images]


def test_training_from_a_json_export_in_place_of_the_sheet_trains_what_the_filled_sheet_trains(selection, tmp_path):
    from_export = linked_copy(selection["runs"], tmp_path / "export")
    shutil.copy(FIXTURES / "clean.json", _export_path(RunPaths(from_export, "quick", "hand"), "json"))
    _ok(_train(selection, from_export))  # the sheet beside it still has empty labels
    from_sheet = linked_copy(selection["runs"], tmp_path / "sheet")
    sheet = RunPaths(from_sheet, "quick", "hand").label_sheet(2, "random", 1)
    sheet.unlink()
    sheet.write_text("path,label\n" + "".join(f"{p},{selection['truth'][p]}\n" for p in _selected(selection)))
    _ok(_train(selection, from_sheet))
    for net_id in (0, 1):
        a, b = (torch.load(RunPaths(r, "quick", "hand").checkpoint(2, "random", 1, net_id), weights_only=True)
                for r in (from_export, from_sheet))
        assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


@pytest.mark.parametrize("suffix", FORMATS)
def test_a_skip_then_a_label_and_two_annotators_who_agree_give_one_class(selection, suffix, tmp_path):
    """The messy project without its skipped, disputed and untouched tasks: what is left reads."""
    skipped, disputed, untouched, *kept = _fixture_tasks()
    left_out = {skipped, disputed, untouched}
    text = (FIXTURES / f"messy.{suffix}").read_text()
    part = tmp_path / f"part.{suffix}"
    if suffix == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        with open(part, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(r for r in rows if r["pool_path"] not in left_out)
    else:
        items = json.loads(text)
        pool_path = (lambda i: i["data"]["pool_path"]) if suffix == "json" else (lambda i: i["pool_path"])
        part.write_text(json.dumps([i for i in items if pool_path(i) not in left_out]))
    answers = [a for a in label_studio.read_answers(part) if a.classes]
    assert sum(a.pool_path == kept[0] for a in answers) == 1  # the skip is no answer
    assert sum(a.pool_path == kept[1] for a in answers) == 2
    given = label_studio.read_export(part, kept, LS_CLASSES)
    assert [LS_CLASSES[k] for k in given] == [selection["truth"][p] for p in kept]


def _edit_json(path, edit):
    items = json.loads((FIXTURES / "clean.json").read_text())
    edit(items)
    path.write_text(json.dumps(items))


def _choose(items, k, choices):
    items[k]["annotations"][0]["result"][0]["value"]["choices"] = choices


def _move_to_another_image(path):
    items = json.loads((FIXTURES / "clean.min.json").read_text())
    items[4]["pool_path"] = "pool/00199.png"
    path.write_text(json.dumps(items))


def _drop_csv_row(path):
    lines = (FIXTURES / "clean.csv").read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:3] + lines[4:]))


def _messy(suffix):
    return lambda path: shutil.copy(FIXTURES / f"messy.{suffix}", path)


def _messy_fragments(selection):
    skipped, disputed, untouched, *_ = _fixture_tasks()
    right = selection["truth"][disputed]
    wrong = next(c for c in LS_CLASSES if c != right)
    return ["no class for 2 selected image(s)", f"{skipped}, {untouched}", "a prediction is not a label",
            "annotators who disagree on 1 image(s)", f"{disputed}: ", f"'{right}' (annotator 1",
            f"'{wrong}' (annotator 2"]


CASES = {  # export suffix, how the export is made, what the error must say (None: the messy project's)
    "skipped, disputed and untouched tasks (JSON)": ("json", _messy("json"), None),
    "skipped, disputed and untouched tasks (JSON-MIN)": ("json", _messy("min.json"), None),
    "skipped, disputed and untouched tasks (CSV)": ("csv", _messy("csv"), None),
    "an unknown class": ("json", lambda p: _edit_json(p, lambda items: _choose(items, 2, ["12"])),
                         ["classes that are not the dataset's at task", "'12'", "the classes: 0, 1, 2"]),
    "a cancelled annotation that holds a class": ("json", lambda p: _edit_json(
        p, lambda items: items[1]["annotations"][0].update(was_cancelled=True)), ["no class for 1 selected image(s)"]),
    "two classes in one annotation": ("json", lambda p: _edit_json(p, lambda items: _choose(items, 3, ["1", "2"])),
                                      ["more than one class in one annotation", "(1 and 2)"]),
    "a task not in the selection": ("json", _move_to_another_image,
                                    ["tasks for images that were not selected", "(pool/00199.png)",
                                     "no class for 1 selected image(s)"]),
    "a missing image": ("csv", _drop_csv_row, ["no class for 1 selected image(s)"]),
    "a task without its pool path": ("json", lambda p: _edit_json(p, lambda items: items[0]["data"].pop("pool_path")),
                                     ["tasks without a pool_path", "no class for 1 selected image(s)"]),
    "cut short": ("json", lambda p: p.write_bytes((FIXTURES / "clean.json").read_bytes()[:3000]),
                  ["is not valid JSON", "cut short"]),
}


@pytest.mark.parametrize("case", CASES)
def test_an_export_without_one_agreed_class_per_image_is_refused_naming_them_and_nothing_is_written(
        selection, tmp_path, case):
    runs = linked_copy(selection["runs"], tmp_path / "runs")
    suffix, make, fragments = CASES[case]
    export = _export_path(RunPaths(runs, "quick", "hand"), suffix)
    make(export)
    before = folder_state(runs)
    refused = _train(selection, runs)
    assert_clean_error(refused, str(export), "nothing was trained or written",
                       *(fragments or _messy_fragments(selection)))
    assert folder_state(runs) == before


def test_two_exports_for_one_selection_are_refused(selection, tmp_path):
    runs = linked_copy(selection["runs"], tmp_path / "runs")
    paths = RunPaths(runs, "quick", "hand")
    shutil.copy(FIXTURES / "clean.json", _export_path(paths, "json"))
    shutil.copy(FIXTURES / "clean.csv", _export_path(paths, "csv"))
    before = folder_state(runs)
    assert_clean_error(_train(selection, runs), "two Label Studio exports", "Move away the one you do not mean")
    assert folder_state(runs) == before
