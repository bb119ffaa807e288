"""Write a few hundred images as PNG files: a folder of images of your own, to try DIAM on.

    python examples/make_png_folder.py digits_png                   scikit-learn's digits: no download
    python examples/make_png_folder.py fashion_png --source fmnist  Fashion-MNIST, read from --data_root

writes
    digits_png/pool/00000.png ...       the images to choose from (--pool of them)
    digits_png/pool.csv                 path,label: the first --labelled carry their class, the others none
    digits_png/test/<class>/00000.png   a labelled test set (--test images), in class folders
    digits_png/dataset.json             what every script takes as --dataset (docs/own_data.md)

The folder's own name is the dataset's "name", so it must be one a dataset file allows (letters,
digits, '_', '-', '.'; not a built-in dataset's name such as digits): others are refused first.

The images are those a run of the built-in dataset (`digits` or `fmnist`) with `--pool_size POOL
--test_size TEST` uses. scikit-learn ships the digits (8 x 8 pixels), so the default needs no files
and no internet; Fashion-MNIST is read from --data_root (default: $DIAM_DATA_ROOT, else ./data).
"""
import argparse
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from diam.dataset_file import NAME_RULE, is_valid_name  # noqa: E402
from diam.errors import UserError, run_cli  # noqa: E402
from diam.labels import write_sheet  # noqa: E402
from diam.paths import write_json  # noqa: E402
from diam.presets import SUBSET_SEED  # noqa: E402

# Each source's classes in label order, as folder names (torchvision's Fashion-MNIST names have '/' and
# spaces), and the side its images are stored at (their own).
SOURCES = {
    "digits": (tuple("0123456789"), 8),
    "fmnist": (("t_shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                "ankle_boot"), 28),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="the folder to write (must not hold a dataset.json yet)")
    p.add_argument("--pool", type=int, default=500, help="pool images (default 500)")
    p.add_argument("--test", type=int, default=200, help="test images (default 200)")
    p.add_argument("--labelled", type=int, default=150,
                   help="pool images whose class pool.csv gives (default 150, the quick preset's initial set)")
    p.add_argument("--source", choices=sorted(SOURCES), default="digits",
                   help="whose images: digits (default; scikit-learn's, no files needed) or fmnist (Fashion-MNIST)")
    p.add_argument("--side", type=int, default=None, help="the side images are stored at (default: their own, 8 or 28)")
    p.add_argument("--data_root", default=None,
                   help="where Fashion-MNIST is, for --source fmnist (default: $DIAM_DATA_ROOT, else ./data)")
    args = p.parse_args(argv)
    classes, own_side = SOURCES[args.source]
    if min(args.pool, args.test) < 1 or not 0 <= args.labelled <= args.pool:
        p.error("--pool and --test must be positive, and --labelled between 0 and --pool")
    out = Path(args.out)
    name = out.resolve().name  # dataset.json's "name": every script refuses the file if it is not valid
    if not is_valid_name(name):
        raise UserError(f"the folder {out} would name the dataset {name!r} (dataset.json takes the folder's name), "
                        f"but {NAME_RULE}. Choose a folder with such a name (e.g. {args.source}_png).")
    if (out / "dataset.json").exists():
        raise UserError(f"{out} already holds a dataset ({out / 'dataset.json'}); choose another folder.")

    from PIL import Image

    from diam.data import DatasetMissing, load_dataset
    from diam.settings import read_environment

    environment = read_environment()
    try:
        data = load_dataset(args.source, args.data_root or environment.data_root, args.pool, args.test, SUBSET_SEED,
                            environment.cache)
    except DatasetMissing as err:  # without its advice to use --dataset digits: this script takes --source
        raise UserError(f"{err.where} This script writes Fashion-MNIST's own images, so it needs them "
                        "(--source digits needs no files).") from None
    if len(data.pool_labels) < args.pool or len(data.test_labels) < args.test:
        raise UserError(f"{args.source} has {len(data.pool_labels)} pool and {len(data.test_labels)} test images; "
                        "ask for fewer.")
    pool_paths, pool_labels = [], []
    for i, (image, label) in enumerate(zip(data.pool_images.numpy(), data.pool_labels.tolist())):
        path = out / "pool" / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, "L").save(path)
        pool_paths.append(path.relative_to(out).as_posix())
        pool_labels.append(classes[label] if i < args.labelled else "")
    for i, (image, label) in enumerate(zip(data.test_images.numpy(), data.test_labels.tolist())):
        path = out / "test" / classes[label] / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, "L").save(path)
    write_sheet(out / "pool.csv", pool_paths, pool_labels)
    # Written last: a folder with a dataset.json is complete.
    write_json(out / "dataset.json", {"name": name, "pool": "pool.csv", "test": "test",
                                      "side": args.side or own_side, "classes": list(classes)})
    print(f"{args.pool} pool images ({args.labelled} labelled) and {args.test} test images: {out / 'dataset.json'}")


if __name__ == "__main__":
    run_cli(main)
