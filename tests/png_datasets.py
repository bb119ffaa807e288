"""Datasets of PNG files for the tests of dataset files, label sheets and named target nets."""
import json
from pathlib import Path

import numpy as np
from PIL import Image

from diam.labels import write_sheet


def write_png_dataset(folder: Path, name: str, pool_images, pool_labels, test_images, test_labels, classes,
                      labelled=None, side=None) -> Path:
    """pool/NNNNN.png with pool.csv (a label where `labelled`, default everywhere), test/<class>/NNNNN.png,
    and dataset.json; returns the dataset file. Images are uint8 (N, H, W) arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    labelled = np.ones(len(pool_labels), bool) if labelled is None else np.asarray(labelled)
    paths = []
    for i, image in enumerate(np.asarray(pool_images)):
        path = folder / "pool" / f"{i:05d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(image, "L").save(path)
        paths.append(path.relative_to(folder).as_posix())
    write_sheet(folder / "pool.csv", paths, [classes[k] if known else "" for k, known in zip(pool_labels, labelled)])
    for i, (image, label) in enumerate(zip(np.asarray(test_images), test_labels)):
        path = folder / "test" / classes[label] / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, "L").save(path)
    side = side or np.asarray(pool_images).shape[-1]
    description = folder / "dataset.json"
    description.write_text(json.dumps({"name": name, "pool": "pool.csv", "test": "test", "side": int(side),
                                       "classes": list(classes)}))
    return description


# The selection that tests/fixtures/label_studio/ was labelled from in Label Studio: digits as PNGs,
# the person knowing the labels of the first INITIAL pool images, two tiny nets, and one random
# selection. Random picks with the run's seed alone (not from the nets), so every machine picks the
# same images, and the committed exports match the selection a test makes.
LS_CLASSES = [str(c) for c in range(10)]
LS_POOL, LS_TEST, LS_INITIAL, LS_BATCH = 200, 100, 30, 10
LS_STEP_ARGS = ["--model_num", 2, "--preset", "quick", "--pool_size", LS_POOL, "--test_size", LS_TEST,
                "--initial_labeled", LS_INITIAL, "--query_batch", LS_BATCH, "--epochs", 2, "--train_batch", 15,
                "--image_size", 32, "--al_iters", 3, "--device", "cpu"]


def label_studio_selection(home: Path, step) -> dict:
    """Write the dataset under home/pngs and make its first selection in home/runs with `step(script,
    *args)` (a subprocess or the tests' in-process runner, returning a CompletedProcess); returns the
    dataset file, the run folder, the pool's true labels and each step's result."""
    from diam.data import load_dataset
    digits = load_dataset("digits", pool_size=LS_POOL, test_size=LS_TEST)
    truth = write_png_dataset(home / "pngs", "hand", digits.pool_images.numpy(), digits.pool_labels.tolist(),
                              digits.test_images.numpy(), digits.test_labels.tolist(), LS_CLASSES)
    paths = [f"pool/{i:05d}.png" for i in range(LS_POOL)]
    labels = [LS_CLASSES[k] for k in digits.pool_labels.tolist()]
    write_sheet(home / "pngs" / "person_pool.csv", paths,
                [label if i < LS_INITIAL else "" for i, label in enumerate(labels)])
    dataset = home / "pngs" / "person.json"
    dataset.write_text(json.dumps({**json.loads(truth.read_text()), "pool": "person_pool.csv"}))
    runs = home / "runs"
    common = ["--dataset", dataset, "--work_dir", runs, *LS_STEP_ARGS]
    trained = step("train_net.py", *common, "--al_iter", 0, "--net_id", 0, 1)
    selected = step("al_select.py", *common, "--method", "random", "--al_iter", 0)
    return {"dataset": dataset, "runs": runs, "truth": dict(zip(paths, labels)), "trained": trained,
            "selected": selected}
