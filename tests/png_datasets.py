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
