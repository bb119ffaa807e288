"""Labelling a selection in Label Studio: its import file and labelling configuration out, its export in.

Out, beside each selection's label sheet: `iter<I>_label_studio.json`, one task per selected image.
A task's `image` is a Label Studio local-files address, `/data/local-files/?d=<folder>/<path>`:
the dataset file's folder by name, then the image's path in the sheet. Label Studio serves it when
started with LOCAL_FILES_DOCUMENT_ROOT set to the folder that holds the dataset file's folder, and
given a local storage on the dataset file's folder (docs/own_data.md). The task's data also carries
the pool path (how the export is matched back to the selection), each target model's predicted
class (`votes`), their majority class and how much they disagree; the majority is the task's
prediction, with the disagreement as its score, so the Data Manager sorts by it. The labelling
configuration (an image and one single-choice list of the dataset's classes) is written once per
run folder.

In: a Label Studio export of the project (JSON, JSON-MIN or CSV) placed beside the sheet as
`iter<I>_label_studio_export.json` or `.csv`, read instead of the sheet, with the sheet's checks:
each selected image labelled, no class outside the dataset's, no task outside the selection. A
cancelled (skipped) annotation, or one submitted without a class, gives no label; two annotations
of one image that name different classes are refused with both answers (agreeing ones are fine).
Predictions are never read as labels.
"""
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import numpy as np

from .errors import UserError
from .labels import SHOWN, some_of
from .paths import write_json, write_text

# The names the configuration gives its tags; the export's results are read by the choice's value.
IMAGE_TAG, CHOICES_TAG = "image", "label"
LOCAL_FILES = "/data/local-files/?d="


def labelling_config(classes: Sequence[str]) -> str:
    """Label Studio's labelling configuration: the image, and one class to choose among `classes`."""
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in classes)
    return (f'<View>\n  <Image name="{IMAGE_TAG}" value="$image"/>\n'
            f'  <Choices name="{CHOICES_TAG}" toName="{IMAGE_TAG}" choice="single" showInLine="true" '
            f'required="true">\n{choices}\n  </Choices>\n</View>\n')


def write_config(path: Path, classes: Sequence[str]) -> None:
    """The configuration, once: a file already there with the same classes is left as it is."""
    text = labelling_config(classes)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        write_text(path, text)


def image_addresses(images: Sequence[str], dataset_folder: Path, whole_pool: Sequence[str]) -> list[str]:
    """Where Label Studio's local-files serving finds each image named as in the sheet: below the
    folder that holds the dataset file's folder (LOCAL_FILES_DOCUMENT_ROOT), so one local storage
    on the dataset file's folder serves them all (Label Studio refuses a storage on the root itself).
    A pool that lists an image outside that folder names every image from '/' instead."""
    if any(Path(p).is_absolute() for p in whole_pool):
        named = [str(dataset_folder / p).lstrip("/") for p in images]
    else:
        named = [f"{dataset_folder.name}/{p}" for p in images]
    return [LOCAL_FILES + quote(n, safe="/") for n in named]


def majority(votes: np.ndarray) -> tuple[int, float]:
    """The class most models predict (ties: the one the dataset lists first) and the share of models
    that predict another one: 0 when all agree, up to 1 - 1/T."""
    counts = np.bincount(votes)
    return int(counts.argmax()), float(1 - counts.max() / len(votes))


def tasks(images: Sequence[str], addresses: Sequence[str], votes: np.ndarray, nets: Sequence[str],
          classes: Sequence[str], known: Sequence[Optional[str]], model_version: str) -> list[dict]:
    """One task per image; `votes` is (T, len(images)), each model's predicted class index."""
    out = []
    for k, image in enumerate(images):
        top, disagreement = majority(votes[:, k])
        data = {"image": addresses[k], "pool_path": image, "majority": classes[top],
                "disagreement": round(disagreement, 4),
                "votes": {f"net{n} {name}": classes[votes[n, k]] for n, name in enumerate(nets)}}
        if known[k]:  # the pool manifest has a label for it; the sheet shows it filled in
            data["manifest_label"] = known[k]
        choice = {"from_name": CHOICES_TAG, "to_name": IMAGE_TAG, "type": "choices",
                  "value": {"choices": [classes[top]]}}
        out.append({"data": data, "predictions": [{"model_version": model_version,
                                                   "score": round(disagreement, 4), "result": [choice]}]})
    return out


def write_tasks(path: Path, task_list: list[dict]) -> None:
    write_json(path, task_list)


# ---------------------------------------------------------------- reading an export back
@dataclass
class Answer:
    """One annotation of one task, as the export gives it."""
    pool_path: Optional[str]  # None: the task's data has no pool_path
    where: str  # for messages: "task 12" / "row 4"
    annotator: str
    classes: list  # what was chosen ([] for a cancelled or empty annotation)


def _choices(value) -> list:
    """The classes a choices result holds: JSON-MIN and CSV give one class as a bare string, several as
    {"choices": [...]} (in CSV as that object's JSON text)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except ValueError:
                return [text]
        else:
            return [text] if text else []
    if isinstance(value, dict):
        value = value.get("choices", [])
    return [str(v) for v in value] if isinstance(value, list) else []


def _full_json(items: list) -> list[Answer]:
    answers = []
    for task in items:
        data = task.get("data") if isinstance(task.get("data"), dict) else {}
        where = f"task {task.get('id', '?')}"
        pool_path = data.get("pool_path")
        annotations = task.get("annotations") or []
        if not annotations:  # a task nobody annotated: its image has no label
            answers.append(Answer(pool_path, where, "nobody", []))
        for annotation in annotations:
            chosen = [] if annotation.get("was_cancelled") else \
                [c for result in annotation.get("result") or [] if result.get("type") == "choices"
                 for c in _choices(result.get("value"))]
            answers.append(Answer(pool_path, f"{where} annotation {annotation.get('id', '?')}",
                                  str(annotation.get("completed_by", "?")), chosen))
    return answers


def _flat_rows(rows: list[dict], row_name) -> list[Answer]:
    """JSON-MIN's and CSV's rows: one per annotation, the data's fields and the choice (under the
    Choices tag's name) side by side."""
    return [Answer(row.get("pool_path") or None, row_name(n, row), str(row.get("annotator", "?") or "?"),
                   _choices(row.get(CHOICES_TAG, "")))
            for n, row in enumerate(rows)]


def read_answers(path: Path) -> list[Answer]:
    """Every annotation in a Label Studio export (JSON, JSON-MIN: told apart by their tasks' shape; CSV)."""
    what = f"the Label Studio export {path}"
    redo = ("Export the project again, save it under this name, then run this command again (nothing was trained "
            "or written).")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{what} could not be read ({err}). {redo}") from None
    if path.suffix.lower() == ".csv":
        try:
            rows = list(csv.DictReader(io.StringIO(text), strict=True))
        except csv.Error as err:
            raise UserError(f"{what} is not a valid CSV file ({err}); it may have been cut short. {redo}") from None
        if rows and "pool_path" not in rows[0]:
            raise UserError(f"{what} has no pool_path column: it was not exported from a project whose tasks came "
                            f"from al_select.py's iter<I>_label_studio.json. {redo}")
        return _flat_rows(rows, lambda n, row: f"row {n + 2}, task {row.get('id', '?')} annotation "
                                               f"{row.get('annotation_id', '?')}")
    try:
        items = json.loads(text)
    except ValueError as err:
        raise UserError(f"{what} is not valid JSON ({err}); it may have been cut short. {redo}") from None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise UserError(f"{what} is not a list of tasks, as Label Studio's JSON and JSON-MIN exports are. {redo}")
    if any("annotations" in i for i in items):
        return _full_json(items)
    return _flat_rows(items, lambda n, row: f"task {row.get('id', '?')} annotation {row.get('annotation_id', '?')}")


def read_export(path: Path, image_paths: Sequence[str], classes: Sequence[str]) -> list[int]:
    """The class index of each image in `image_paths`, from the Label Studio export at `path`; a
    UserError names the file, the images and the answers while any image lacks one agreed class."""
    wanted = set(image_paths)
    index = {c: i for i, c in enumerate(classes)}
    given: dict[str, list[Answer]] = {p: [] for p in image_paths}
    unnamed, foreign, several, unknown = [], [], [], []
    for answer in read_answers(path):
        if answer.pool_path is None:
            unnamed.append(answer.where)
        elif answer.pool_path not in wanted:
            foreign.append(f"{answer.where} ({answer.pool_path})")
        elif len(answer.classes) > 1:
            several.append(f"{answer.where} ({' and '.join(answer.classes)})")
        elif answer.classes and answer.classes[0] not in index:
            unknown.append(f"{answer.where} '{answer.classes[0]}'")
        elif answer.classes:
            given[answer.pool_path].append(answer)
    missing = [p for p in image_paths if not given[p]]
    disagreeing = [f"{p}: " + " versus ".join(f"'{a.classes[0]}' (annotator {a.annotator}, {a.where})"
                                              for a in given[p])
                   for p in image_paths if len({a.classes[0] for a in given[p]}) > 1]
    problems = []
    if missing:
        problems.append(f"no class for {len(missing)} selected image(s): {some_of(missing)} (not annotated, or "
                        "only skipped or cancelled; a prediction is not a label)")
    if disagreeing:
        problems.append(f"annotators who disagree on {len(disagreeing)} image(s): {'; '.join(disagreeing[:SHOWN])}"
                        + (f" and {len(disagreeing) - SHOWN} more" if len(disagreeing) > SHOWN else ""))
    if unknown:
        problems.append(f"classes that are not the dataset's at {some_of(unknown)} (the classes: {', '.join(classes)})")
    if several:
        problems.append(f"more than one class in one annotation at {some_of(several)}")
    if foreign:
        problems.append(f"tasks for images that were not selected: {some_of(foreign)}")
    if unnamed:
        problems.append(f"tasks without a pool_path at {some_of(unnamed)} (not imported from al_select.py's "
                        "iter<I>_label_studio.json)")
    if problems:
        raise UserError(f"the Label Studio export {path} does not give each of the {len(image_paths)} selected "
                        f"images one class: {'; '.join(problems)}. Fix it in Label Studio (annotate the images "
                        "named, settle a disagreement by deleting or updating one of the annotations), export "
                        "the project again under this name, then run this command again (nothing was trained "
                        "or written).")
    return [index[given[p][0].classes[0]] for p in image_paths]
