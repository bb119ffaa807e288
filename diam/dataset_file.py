"""A dataset made from your own image files, described by a small JSON file: `--dataset FILE.json`.

    {"name": "shoes", "pool": "pool.csv", "test": "test", "side": 64, "classes": ["boot", "sandal"]}

`pool` and `test` (relative to the JSON file) are each a folder of class subfolders
(torchvision's ImageFolder layout: test/sandal/0001.png) or a CSV manifest with the header
`path,label` (paths relative to the manifest; an empty label marks an image nobody has
labelled yet, allowed in the pool only). `side` is the size images are stored at: each is
resized so that its shorter side is `side`, then centre-cropped to a square (the nets'
augmentation and evaluation transform take it from there, as for the built-in datasets).
`classes` (optional) fixes the classes and their order; by default they are the test set's,
sorted. `name` is the dataset's folder in the run layout and in results trees.

Why a file rather than `--dataset folder:PATH`: the name is a folder of the run layout, so it
must be short and stable whatever the paths, and the pool, the test set, the side and the
classes belong together; the file says all of it once, and every script (and iter_all.sh's
DATASETS, run_grid.py's --datasets) takes its path wherever a built-in dataset's name goes.

Images of any size and mode are decoded once (Pillow): to 8-bit grayscale when every image
is grayscale, else to RGB. The decoded pixels are kept as uint8 arrays in the cache
(the step's: $DIAM_CACHE, default the project's .cache) under a key made from the files' bytes (not their paths
or times) and the side, written atomically, and memory-mapped when large, so a second run
hashes the files but decodes nothing.
"""
import hashlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageOps

from .errors import UserError
from .labels import read_rows
from .paths import PROJECT_CACHE, atomic_path, step_lock
from .datasets import DATASETS

# What torchvision's ImageFolder takes for an image.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
GRAYSCALE_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
# A split whose decoded pixels exceed this is memory-mapped from the cache instead of read into memory.
MEMMAP_BYTES = 1 << 30
CACHE_FORMAT = 1  # part of the cache key: a change in how images are decoded makes new entries
FIELDS = ("name", "pool", "test", "side", "classes")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Folders of the run layout that sit beside a dataset's folder (paths.py).
RESERVED_NAMES = re.compile(r"seed\d+|logs|extracted_results")
DECODE_THREADS = min(8, os.cpu_count() or 1)  # Pillow releases the GIL while it decodes
# What a dataset's "name" must be, in words, for the messages that refuse one.
NAME_RULE = ("a name is a folder of the run layout, so it must be letters, digits, '_', '-' or '.', start with a "
             f"letter or digit, and be none of the built-in datasets ({', '.join(DATASETS)}) nor 'logs', "
             "'extracted_results' or 'seed<N>'")


def is_valid_name(name) -> bool:
    """Whether `name` can be a dataset file's "name", its folder in the run layout (NAME_RULE)."""
    return isinstance(name, str) and bool(NAME.fullmatch(name)) and not RESERVED_NAMES.fullmatch(name) \
        and name not in DATASETS


def is_dataset_file(dataset: str) -> bool:
    """Whether a --dataset value names a dataset file rather than a built-in dataset."""
    return dataset.lower().endswith(".json")


@dataclass(frozen=True)
class DatasetFile:
    path: Path  # the JSON file
    name: str
    pool: Path  # a folder of class subfolders, or a .csv manifest
    test: Path
    side: int
    classes: Optional[tuple]  # None: the test set's classes, sorted
    recorded: dict  # what a run folder's config.json records of it: the file's own words

    @property
    def base(self) -> Path:
        """The folder the label sheets' image paths are relative to."""
        return self.path.parent


def read_dataset_file(spec: str) -> DatasetFile:
    """Read and check a dataset file; a UserError says what is wrong with it and how to fix it."""
    path = Path(os.path.abspath(spec))
    fix = "See docs/own_data.md for the format."
    try:
        described = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"the dataset file {path} does not exist. --dataset takes a built-in dataset "
                        f"({', '.join(DATASETS)}) or a .json file describing your images. {fix}") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise UserError(f"the dataset file {path} could not be read as JSON ({err}). {fix}") from None
    if not isinstance(described, dict):
        raise UserError(f"the dataset file {path} must hold one JSON object with the keys "
                        f"{', '.join(FIELDS)}. {fix}")
    unknown = sorted(set(described) - set(FIELDS))
    missing = [k for k in ("name", "pool", "test", "side") if k not in described]
    if unknown or missing:
        raise UserError(f"the dataset file {path} has " + "; ".join(filter(None, [
            f"unknown keys {', '.join(unknown)}" if unknown else "",
            f"no {', '.join(missing)}" if missing else ""])) + f". It takes {', '.join(FIELDS)} (classes is "
            f"optional). {fix}")
    name = described["name"]
    if not is_valid_name(name):
        raise UserError(f"the dataset file {path} names the dataset {name!r}: {NAME_RULE}.")
    side = described["side"]
    if isinstance(side, bool) or not isinstance(side, int) or side < 2:
        raise UserError(f"the dataset file {path} gives side {side!r}: it must be a whole number of pixels "
                        "(2 or more), the size images are stored at (e.g. 32, or 224 for photos).")
    classes = described.get("classes")
    if classes is not None:
        if not isinstance(classes, list) or len(classes) < 2 or not all(
                isinstance(c, str) and c.strip() == c and c for c in classes) or len(set(classes)) != len(classes):
            raise UserError(f"the dataset file {path} gives classes {classes!r}: a list of two or more distinct, "
                            "non-empty names without surrounding spaces, in the order the nets number them.")
        classes = tuple(classes)
    splits = {}
    for split in ("pool", "test"):
        where = described[split]
        source = path.parent / where if isinstance(where, str) and where else None
        if source is None or not (source.is_dir() or (source.is_file() and source.suffix.lower() == ".csv")):
            raise UserError(f"the dataset file {path} gives {split} {where!r}, which is neither a folder nor a "
                            f".csv file (paths are relative to the dataset file's folder, {path.parent}). The "
                            f"{split} is a folder of class subfolders (as torchvision's ImageFolder reads) or a "
                            "CSV manifest with the header path,label.")
        splits[split] = Path(os.path.abspath(source))
    recorded = {"pool": described["pool"], "test": described["test"], "side": side,
                "classes": list(classes) if classes else None}
    return DatasetFile(path, name, splits["pool"], splits["test"], side, classes, recorded)


# ---------------------------------------------------------------- listing the files
@dataclass
class Listing:
    files: list  # absolute paths
    labels: list  # class names; "" where unknown
    origins: list  # where each was listed, for messages: "line 7 of /x/pool.csv" or its class folder


def _list_folder(root: Path, split: str) -> Listing:
    """ImageFolder's layout: root/<class>/**/<image>, classes and files in sorted order."""
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    listing = Listing([], [], [])
    for name in classes:
        for folder, subfolders, names in os.walk(root / name, followlinks=True):
            subfolders[:] = sorted(s for s in subfolders if not s.startswith("."))  # walked in this order
            for file in sorted(names):
                if not file.startswith(".") and file.lower().endswith(IMAGE_EXTENSIONS):
                    listing.files.append(Path(folder) / file)
                    listing.labels.append(name)
                    listing.origins.append(f"class folder {root / name}")
    if not listing.files:
        raise UserError(f"the {split} folder {root} holds no images in class subfolders ({root}/<class>/<image>, "
                        f"with one of the extensions {' '.join(IMAGE_EXTENSIONS)}).")
    return listing


def _list_manifest(manifest: Path, split: str) -> Listing:
    listing = Listing([], [], [])
    seen = {}
    for line, image, label in read_rows(manifest, f"the {split} manifest"):
        if not image:
            raise UserError(f"line {line} of the {split} manifest {manifest} has no path.")
        file = Path(os.path.abspath(manifest.parent / image))
        if file in seen:
            raise UserError(f"the {split} manifest {manifest} lists {image} twice (lines {seen[file]} and {line}); "
                            "each image must have one row.")
        seen[file] = line
        listing.files.append(file)
        listing.labels.append(label)
        listing.origins.append(f"line {line} of {manifest}")
    if not listing.files:
        raise UserError(f"the {split} manifest {manifest} lists no images.")
    return listing


def _listing(source: Path, split: str) -> Listing:
    return _list_folder(source, split) if source.is_dir() else _list_manifest(source, split)


def _class_indices(listing: Listing, classes: tuple, split: str) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    unknown = [(o, label) for o, label in zip(listing.origins, listing.labels) if label and label not in index]
    if unknown:
        where, label = unknown[0]
        raise UserError(f"the {split} has {len(unknown)} image(s) of a class the dataset does not have, the first "
                        f"'{label}' ({where}). The classes are {', '.join(classes)} (the dataset file's "
                        "'classes', else every class the test set has an image of: an empty class folder adds "
                        "none): fix the label, or list every class under 'classes' in the dataset file.")
    return np.array([index[label] if label else -1 for label in listing.labels], dtype=np.int64)


def image_key(file: Path, base: Path) -> str:
    """How the label sheets name an image: its path relative to the dataset file's folder
    (absolute when it lies outside it), with '/' separators."""
    try:
        return file.relative_to(base).as_posix()
    except ValueError:
        return file.as_posix()


# ---------------------------------------------------------------- decoding, once
def _digest(file: Path, origin: str) -> bytes:
    digest = hashlib.blake2b(digest_size=16)
    try:
        with open(file, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError as err:
        raise UserError(f"the image {file} ({origin}) could not be read: {err.strerror or err}. Restore it "
                        "or remove it from the dataset.") from None
    return digest.digest()


def _open(file: Path, origin: str) -> Image.Image:
    try:
        image = Image.open(file)
        image.load()
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"the image {file} ({origin}) could not be decoded ({err}). Replace it with a valid "
                        "image file or remove it from the dataset.") from None
    return ImageOps.exif_transpose(image)  # a photo stored sideways is shown upright: so it is labelled


def _is_grayscale(file: Path, origin: str) -> bool:
    try:
        with Image.open(file) as image:  # reads the header only
            return image.mode in GRAYSCALE_MODES
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"the image {file} ({origin}) could not be decoded ({err}). Replace it with a valid "
                        "image file or remove it from the dataset.") from None


def _eight_bit(image: Image.Image, colour: bool) -> Image.Image:
    if image.mode.startswith("I"):  # 16-bit grayscale: keep the top 8 bits (Pillow's convert would clip)
        wide = np.asarray(image).astype(np.int64) >> 8
        image = Image.fromarray(np.clip(wide, 0, 255).astype(np.uint8), "L")
    return image.convert("RGB" if colour else "L")


def _square(image: Image.Image, side: int) -> Image.Image:
    """Shorter side to `side` (Pillow's bilinear filter spans the whole footprint: antialiased), centre crop."""
    width, height = image.size
    if (width, height) == (side, side):
        return image
    scale = side / min(width, height)
    size = (max(side, round(width * scale)), max(side, round(height * scale)))
    image = image.resize(size, Image.Resampling.BILINEAR)
    left, top = (size[0] - side) // 2, (size[1] - side) // 2
    return image.crop((left, top, left + side, top + side))


def _decode_split(listing: Listing, side: int, colour: bool, destination: Path) -> None:
    """Decode every image of a split into a uint8 .npy file, written under a temporary name and renamed."""
    shape = (len(listing.files), 3, side, side) if colour else (len(listing.files), side, side)
    with atomic_path(destination) as temporary:
        pixels = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.uint8, shape=shape)

        def decode(i):
            image = _square(_eight_bit(_open(listing.files[i], listing.origins[i]), colour), side)
            array = np.asarray(image)
            pixels[i] = array.transpose(2, 0, 1) if colour else array

        with ThreadPoolExecutor(DECODE_THREADS) as threads:
            list(threads.map(decode, range(len(listing.files))))
        pixels.flush()
        del pixels


def _load_cached(path: Path, count: int, side: int) -> Optional[np.ndarray]:
    """The cached pixels, or None when the entry is missing or not what the key promises."""
    try:
        large = path.stat().st_size > MEMMAP_BYTES
        # Copy-on-write: pages are read when touched, and the arrays stay writable for torch.
        pixels = np.load(path, mmap_mode="c" if large else None)
    except (OSError, ValueError):
        return None
    if pixels.dtype != np.uint8 or len(pixels) != count or pixels.shape[-2:] != (side, side):
        return None
    return pixels


@dataclass
class FileImages:
    pool_images: np.ndarray  # (N, side, side) or (N, 3, side, side) uint8
    pool_labels: np.ndarray  # (N,) int64, -1 where nobody has labelled the image yet
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple
    pool_paths: tuple  # image_key of each pool image
    fingerprint: str  # the images' bytes, the side, the classes and every label


def load_images(dataset: DatasetFile, cache: Path = PROJECT_CACHE) -> FileImages:
    """The dataset's pixels and labels: decoded once into `cache`, then read from there."""
    pool, test = _listing(dataset.pool, "pool"), _listing(dataset.test, "test")
    unlabelled = [o for o, label in zip(test.origins, test.labels) if not label]
    if unlabelled:
        raise UserError(f"the test set needs a label for every image, but {len(unlabelled)} have none (the first "
                        f"at {unlabelled[0]}); accuracy is measured on it.")
    classes = dataset.classes or tuple(sorted(set(test.labels)))
    if len(classes) < 2:
        raise UserError(f"the test set of {dataset.path} has one class only ({classes[0]}); a classifier needs "
                        "two or more.")
    pool_labels, test_labels = _class_indices(pool, classes, "pool"), _class_indices(test, classes, "test set")
    with ThreadPoolExecutor(DECODE_THREADS) as threads:
        digests = list(threads.map(_digest, pool.files + test.files, pool.origins + test.origins))
    key = hashlib.blake2b(f"format {CACHE_FORMAT} side {dataset.side} pool {len(pool.files)} test "
                          f"{len(test.files)}".encode(), digest_size=16)
    for digest in digests:
        key.update(digest)
    key = key.hexdigest()
    fingerprint = hashlib.blake2b(json.dumps([key, classes, pool_labels.tolist(), test_labels.tolist()]).encode(),
                                  digest_size=16).hexdigest()
    places = {split: Path(cache) / "images" / f"{key}-{split}.npy" for split in ("pool", "test")}
    listings = {"pool": pool, "test": test}
    cached = lambda: {split: _load_cached(places[split], len(listings[split].files), dataset.side)  # noqa: E731
                      for split in places}
    pixels = cached()
    if any(p is None for p in pixels.values()) or pixels["pool"].ndim != pixels["test"].ndim:
        with step_lock(places["pool"]):  # processes started together decode once
            pixels = cached()
            if any(p is None for p in pixels.values()) or pixels["pool"].ndim != pixels["test"].ndim:
                with ThreadPoolExecutor(DECODE_THREADS) as threads:
                    grayscale = all(threads.map(_is_grayscale, pool.files + test.files,
                                                pool.origins + test.origins))
                for split, listing in listings.items():
                    _decode_split(listing, dataset.side, not grayscale, places[split])
                pixels = cached()
    return FileImages(pixels["pool"], pool_labels, pixels["test"], test_labels, classes,
                      tuple(image_key(f, dataset.base) for f in pool.files), fingerprint)
