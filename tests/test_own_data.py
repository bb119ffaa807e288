"""Issue 25, item 1: a dataset made from image files, given as a dataset file wherever a dataset name goes."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import PROJECT, assert_clean_error, folder_state, run_script_here
from diam import augment, dataset_file
from diam.data import load_dataset
from diam.errors import UserError
from diam.paths import RunPaths
from diam.settings import resolve_dataset
from png_datasets import write_png_dataset

FASHION_ROOT = PROJECT.parent / "shared" / "datasets"  # where this machine keeps Fashion-MNIST (else skipped)
POOL, TEST = 300, 100
TINY = ["--preset", "quick", "--pool_size", POOL, "--test_size", TEST, "--initial_labeled", 40, "--query_batch", 10,
        "--epochs", 2, "--train_batch", 20, "--image_size", 32, "--al_iters", 2, "--device", "cpu"]


def _two_iterations(dataset, runs, method="margin"):
    """Train iteration 0 (T = 2), test it, select with `method`, train and test iteration 1."""
    common = ["--dataset", dataset, "--model_num", 2, "--work_dir", runs, "--data_root", FASHION_ROOT, *TINY]
    for step in (["train_net.py", "--al_iter", 0, "--net_id", 0, 1],
                 ["test_multi_models.py", "--method", method, "--al_iter", 0],
                 ["al_select.py", "--method", method, "--al_iter", 0],
                 ["train_net.py", "--method", method, "--al_iter", 1, "--net_id", 0, 1],
                 ["test_multi_models.py", "--method", method, "--al_iter", 1]):
        result = run_script_here(step[0], *step[1:], *common)
        assert result.returncode == 0, (step, result.stderr)


def _arrays(path):
    if path.suffix == ".pt":
        saved = torch.load(path, weights_only=True)
        return {**saved["state_dict"], **{f"info.{k}": v for k, v in saved["info"].items() if k != "dataset"}}
    with np.load(path) as z:
        return {k: z[k] for k in z.files if k != "dataset"}  # index files name their dataset


@pytest.mark.parametrize("source", ["digits", "fmnist"])  # the README's default (embedded), and Fashion-MNIST
def test_a_png_folder_gives_the_builtin_datasets_selections_weights_and_results(tmp_path, source):
    if source == "fmnist":
        try:
            load_dataset("fmnist", FASHION_ROOT)
        except UserError:
            pytest.skip(f"Fashion-MNIST is not in {FASHION_ROOT}")
    made = run_script_here("examples/make_png_folder.py", tmp_path / f"{source}_png", "--pool", POOL, "--test", TEST,
                           "--labelled", POOL, "--source", source, "--data_root", FASHION_ROOT)
    assert made.returncode == 0, made.stderr
    runs = tmp_path / "runs"
    _two_iterations(source, runs)
    _two_iterations(str(tmp_path / f"{source}_png" / "dataset.json"), runs)

    builtin, files = RunPaths(runs, "quick", source), RunPaths(runs, "quick", f"{source}_png")
    written = sorted(p.relative_to(builtin.root) for p in builtin.root.rglob("*") if p.suffix in (".npz", ".pt"))
    assert len(written) == 10  # 2 index files; 2 iterations x 2 nets x (checkpoint, pool records)
    assert sorted(p.relative_to(files.root) for p in files.root.rglob("*") if p.suffix in (".npz", ".pt")) == written
    for rel in written:  # the same selections, trained weights and pool records
        expected, got = _arrays(builtin.root / rel), _arrays(files.root / rel)
        assert expected.keys() == got.keys(), rel
        for key in expected:
            assert np.array_equal(np.asarray(expected[key]), np.asarray(got[key])), (rel, key)
    for al_iter in (0, 1):  # the same results
        assert files.performances(2, "margin", al_iter).read_bytes() == \
            builtin.performances(2, "margin", al_iter).read_bytes()
    selected = _arrays(builtin.indices(2, "margin", 1))["labeled"][40:]
    assert len(selected) == 10
    # The simulation writes no label sheet: every label is known.
    assert not list(files.root.rglob("*_labels.csv"))
    config = json.loads(files.config_file.read_text())
    assert config["dataset_file"]["pool"] == "pool.csv" and len(config["dataset_content"]) == 32
    assert "dataset_file" not in json.loads(builtin.config_file.read_text())


@pytest.mark.parametrize("folder", ["digits", "my shoes", "seed3"])
def test_make_png_folder_refuses_a_folder_whose_name_no_script_would_take(tmp_path, folder):
    # dataset.json takes the folder's name: one that read_dataset_file refuses is refused before anything is
    # written, and before Fashion-MNIST is looked for (--data_root names a folder without it).
    made = run_script_here("examples/make_png_folder.py", tmp_path / "x" / folder, "--data_root", tmp_path / "none")
    assert_clean_error(made, f"the folder {tmp_path / 'x' / folder} would name the dataset '{folder}'",
                       "none of the built-in datasets", "Choose a folder with such a name")
    assert len(made.stderr.strip().splitlines()) == 1
    assert folder_state(tmp_path) == {}


def test_make_png_folder_without_fashion_mnist_names_its_own_flag(tmp_path, monkeypatch):
    monkeypatch.setattr("diam.data.SYSTEM_LOCATIONS", {})  # a machine with no system-wide copy either
    made = run_script_here("examples/make_png_folder.py", tmp_path / "fashion_png", "--source", "fmnist",
                           "--data_root", tmp_path / "none")
    # The loader's message, whose way out for the scripts (--dataset digits) this script does not take.
    assert_clean_error(made, f"dataset 'fmnist' is not in {tmp_path / 'none'}", "point --data_root",
                       "This script writes Fashion-MNIST's own images")
    assert "--dataset" not in made.stderr and len(made.stderr.strip().splitlines()) == 1
    assert folder_state(tmp_path) == {}


def test_make_png_folder_needs_no_files_and_no_internet_by_default(tmp_path):
    # The README's own-data example on a fresh clone: scikit-learn's digits, nothing read from a data root.
    made = run_script_here("examples/make_png_folder.py", tmp_path / "digits_png")
    assert made.returncode == 0, made.stderr
    described = json.loads((tmp_path / "digits_png" / "dataset.json").read_text())
    assert described == {"name": "digits_png", "pool": "pool.csv", "test": "test", "side": 8,
                         "classes": list("0123456789")}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits_png"]  # nothing written beside it
    assert len(list((tmp_path / "digits_png" / "pool").glob("*.png"))) == 500


# ------------------------------------------------------------ decoding once, into a cache
def _digits_dataset(folder, name="few_digits", pool=30, test=20):
    digits = load_dataset("digits", pool_size=pool, test_size=test)
    return write_png_dataset(folder, name, digits.pool_images.numpy(), digits.pool_labels.tolist(),
                             digits.test_images.numpy(), digits.test_labels.tolist(), [str(c) for c in range(10)])


def test_images_are_decoded_once_then_read_from_a_cache_keyed_by_their_bytes(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    opened = []
    real_open = dataset_file._open
    monkeypatch.setattr(dataset_file, "_open", lambda *a: opened.append(a[0]) or real_open(*a))
    first = dataset_file.load_images(resolve_dataset(str(_digits_dataset(tmp_path / "a")))[1], cache)
    assert len(opened) == 50 and first.pool_images.shape == (30, 8, 8) and first.pool_images.dtype == np.uint8
    again = dataset_file.load_images(resolve_dataset(str(tmp_path / "a" / "dataset.json"))[1], cache)
    assert len(opened) == 50  # nothing decoded the second time
    np.testing.assert_array_equal(again.pool_images, first.pool_images)
    np.testing.assert_array_equal(again.test_images, first.test_images)
    # Other paths and times, the same bytes: still the cache's.
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    for png in (tmp_path / "b").rglob("*.png"):
        png.touch()
    moved = dataset_file.load_images(resolve_dataset(str(tmp_path / "b" / "dataset.json"))[1], cache)
    assert len(opened) == 50 and moved.fingerprint == first.fingerprint
    # One image's bytes changed: decoded again.
    changed = tmp_path / "b" / "pool" / "00003.png"
    pixels = np.asarray(Image.open(changed)).copy()
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels, "L").save(changed)
    redone = dataset_file.load_images(resolve_dataset(str(tmp_path / "b" / "dataset.json"))[1], cache)
    assert len(opened) == 100 and redone.fingerprint != first.fingerprint
    np.testing.assert_array_equal(redone.pool_images[3], pixels)
    cached = sorted(p.name for p in (tmp_path / "cache" / "images").iterdir() if p.suffix != ".lock")
    assert len(cached) == 4 and all(name.endswith(("-pool.npy", "-test.npy")) for name in cached)  # no temporaries


def test_large_decoded_splits_are_memory_mapped(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    described = resolve_dataset(str(_digits_dataset(tmp_path / "a")))[1]
    in_memory = dataset_file.load_images(described, cache)
    monkeypatch.setattr(dataset_file, "MEMMAP_BYTES", 100)  # the pool's 30 x 8 x 8 bytes are "large" now
    mapped = dataset_file.load_images(described, cache)
    assert isinstance(mapped.pool_images, np.memmap) and not isinstance(in_memory.pool_images, np.memmap)
    np.testing.assert_array_equal(mapped.pool_images, in_memory.pool_images)
    data = load_dataset(described, cache=cache)
    assert data.pool_images.dtype == torch.uint8 and torch.equal(data.pool_images, torch.from_numpy(
        in_memory.pool_images))


def _save(image, path, **options):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path.name


def test_grayscale_and_colour_images_of_any_size_and_mode_are_stored_square_at_the_side(tmp_path):
    folder = tmp_path / "mixed"
    bar = np.zeros((20, 60), np.uint8)
    bar[:, 20:40] = 255  # a white square between two black ones: the centre crop keeps the square
    red = np.zeros((30, 50, 3), np.uint8)
    red[..., 0] = 255
    rows = [
        ("wide.png", Image.fromarray(bar, "L"), "a"),
        ("red.jpg", Image.fromarray(red, "RGB"), "b"),
        ("alpha.png", Image.fromarray(np.full((16, 16, 4), 200, np.uint8), "RGBA"), "a"),
        ("palette.gif", Image.fromarray(red, "RGB").convert("P"), "b"),
        ("deep.png", Image.fromarray(np.full((24, 24), 100 * 256, np.uint16)), "a"),
    ]
    for name, image, _ in rows:
        _save(image, folder / "pool" / name)
    (folder / "pool.csv").write_text("path,label\n" + "".join(f"pool/{n},{c}\n" for n, _, c in rows))
    _save(Image.fromarray(bar, "L"), folder / "test" / "a" / "t.png")
    _save(Image.fromarray(red, "RGB"), folder / "test" / "b" / "t.png")
    (folder / "dataset.json").write_text(json.dumps({"name": "mixed", "pool": "pool.csv", "test": "test", "side": 16}))
    images = dataset_file.load_images(resolve_dataset(str(folder / "dataset.json"))[1], tmp_path / "cache")
    assert images.pool_images.shape == (5, 3, 16, 16) and images.test_images.shape == (2, 3, 16, 16)
    assert images.classes == ("a", "b") and images.pool_labels.tolist() == [0, 1, 0, 1, 0]
    wide, red_jpg, alpha, palette, deep = images.pool_images
    assert (wide[:, :, 2:-2] > 200).all() and (wide == wide[0]).all()  # grayscale in three equal channels
    assert (red_jpg[0] > 240).all() and (red_jpg[1:] < 15).all()  # colour kept
    assert (palette[0] > 240).all() and (palette[1:] < 15).all()
    assert (alpha == 200).all()
    assert (deep == 100).all()  # 16 bits to 8
    # Grayscale images alone are stored with no channel axis, as the built-in datasets.
    _save(Image.fromarray(np.full((16, 16, 2), 90, np.uint8), "LA"), folder / "pool" / "la.png")
    _save(Image.fromarray(bar, "L"), folder / "test" / "b" / "t.png")
    (folder / "pool.csv").write_text("path,label\npool/wide.png,a\npool/la.png,\npool/deep.png,b\n")
    gray = dataset_file.load_images(resolve_dataset(str(folder / "dataset.json"))[1], tmp_path / "cache")
    assert gray.pool_images.shape == (3, 16, 16) and gray.pool_labels.tolist() == [0, -1, 1]
    assert gray.pool_paths == ("pool/wide.png", "pool/la.png", "pool/deep.png")
    assert (gray.pool_images[1] == 90).all() and (gray.pool_images[2] == 100).all()


def test_colour_batches_take_the_same_augmentation_and_a_gray_one_in_colour_is_unchanged():
    generator = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    gray = torch.randint(0, 256, (6, 20, 20), generator=generator(), dtype=torch.uint8)
    as_colour = gray.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    # Saturation jitter is drawn after everything else, and blends a gray image with itself.
    torch.testing.assert_close(augment.train_transform(as_colour, 32, generator()),
                               augment.train_transform(gray, 32, generator()))
    torch.testing.assert_close(augment.eval_transform(as_colour, 32), augment.eval_transform(gray, 32))
    colour = torch.randint(0, 256, (6, 3, 20, 20), generator=generator(), dtype=torch.uint8)
    x = augment.train_transform(colour, 32, generator())
    assert x.shape == (6, 3, 32, 32) and not torch.allclose(x[:, 0], x[:, 1])
    jittered = [augment.train_transform(colour[:1].expand(8, -1, -1, -1), 32, torch.Generator().manual_seed(s))
                for s in range(2)]
    assert not torch.allclose(*jittered)


# ------------------------------------------------------------ bad dataset files
def _bad(folder, change):
    description = _digits_dataset(folder)
    change(folder, json.loads(description.read_text()))
    return description


def _rewrite(folder, described):
    (folder / "dataset.json").write_text(json.dumps(described))


BAD_FILES = {
    "not there": (lambda f, d: (f / "dataset.json").unlink(), "does not exist"),
    "not json": (lambda f, d: (f / "dataset.json").write_text("{name: x"), "could not be read as JSON"),
    "unknown key": (lambda f, d: _rewrite(f, {**d, "sid": 8}), "unknown keys sid"),
    "built-in name": (lambda f, d: _rewrite(f, {**d, "name": "digits"}), "none of the built-in"),
    "reserved name": (lambda f, d: _rewrite(f, {**d, "name": "seed2"}), "'seed<N>'"),
    "no side": (lambda f, d: _rewrite(f, {k: v for k, v in d.items() if k != "side"}), "no side"),
    "side zero": (lambda f, d: _rewrite(f, {**d, "side": 0}), "whole number of pixels"),
    "no pool": (lambda f, d: _rewrite(f, {**d, "pool": "elsewhere.csv"}), "neither a folder nor a .csv"),
}
def _test_manifest(folder, text):
    (folder / "test.csv").write_text(text)
    _rewrite(folder, {**json.loads((folder / "dataset.json").read_text()), "test": "test.csv"})


BAD_CONTENT = {
    "label not a class": (lambda f: (f / "pool.csv").write_text("path,label\npool/00000.png,7\npool/00001.png,x\n"),
                          ["class the dataset does not have", "'x'", "line 3 of",
                           "every class the test set has an image of: an empty class folder adds none"]),
    "unlabelled test image": (lambda f: _test_manifest(f, "path,label\npool/00000.png,3\npool/00001.png,\n"),
                              ["test set needs a label", "line 3 of"]),
    "missing image": (lambda f: (f / "pool" / "00004.png").unlink(), ["00004.png", "line 6 of", "could not be read"]),
    "broken image": (lambda f: (f / "pool" / "00004.png").write_bytes(b"not a png"), ["00004.png",
                                                                                      "could not be decoded"]),
    "truncated image": (lambda f: (f / "pool" / "00004.png").write_bytes((f / "pool" / "00004.png").read_bytes()[:60]),
                        ["00004.png", "could not be decoded"]),  # its header reads, its pixels do not
    "listed twice": (lambda f: (f / "pool.csv").write_text("path,label\npool/00000.png,1\npool/00000.png,\n"),
                     ["twice", "lines 2 and 3"]),
    "other columns": (lambda f: (f / "pool.csv").write_text("file,class\npool/00000.png,1\n"), ["header"]),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_bad_dataset_file_is_a_clear_error(tmp_path, case):
    change, message = BAD_FILES[case]
    description = _bad(tmp_path / "d", change)
    with pytest.raises(UserError, match=message):
        resolve_dataset(str(description))


@pytest.mark.parametrize("case", BAD_CONTENT)
def test_bad_images_or_manifests_are_clear_errors_and_nothing_is_written(tmp_path, monkeypatch, case):
    monkeypatch.setenv("DIAM_CACHE", str(tmp_path / "cache"))
    change, fragments = BAD_CONTENT[case]
    folder = tmp_path / "d"
    _digits_dataset(folder)
    change(folder)
    result = run_script_here("train_net.py", "--dataset", folder / "dataset.json", "--al_iter", 0, "--net_id", 0,
                             "--model_num", 1, "--work_dir", tmp_path / "runs", *TINY)
    assert_clean_error(result, *fragments)
    assert not (tmp_path / "runs").exists()
    cached = [p for p in folder_state(tmp_path / "cache") if Path(p).is_file() and not p.endswith(".lock")]
    assert cached == []  # no decoded split, no temporary left behind


def test_a_run_folder_refuses_other_images_under_the_same_name(tmp_path, monkeypatch):
    from diam import cli
    from diam.run import Run
    from diam.settings import settings_from_args

    monkeypatch.setenv("DIAM_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "d"
    args = ["--dataset", str(_digits_dataset(folder)), "--al_iter", "0", "--model_num", "1", "--work_dir",
            str(tmp_path / "runs"), *map(str, TINY)]
    settings = lambda: settings_from_args(cli.parser("t", method_required=False).parse_args(args))  # noqa: E731
    Run(settings()).claim_folder()
    checkpoint = Run(settings()).checkpoint(0)
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"a checkpoint of the images as they were")
    pixels = np.asarray(Image.open(folder / "pool" / "00001.png")).copy()
    Image.fromarray(255 - pixels, "L").save(folder / "pool" / "00001.png")
    changed = "the images or labels of dataset 'few_digits' are not those its run folder"
    with pytest.raises(UserError, match=changed):
        Run(settings()).data
    # Loading a checkpoint meets the same error, not a claim that the checkpoint is damaged.
    with pytest.raises(UserError, match=changed) as refused:
        Run(settings()).load_net(0)
    assert "damaged" not in str(refused.value)


def test_a_dataset_file_is_used_whole_unless_the_flags_ask_for_a_subset(tmp_path, monkeypatch):
    """The presets' pool and test sizes subsample the built-in datasets; a team's own pool is not cut to them."""
    from diam import cli
    from diam.run import Run
    from diam.settings import settings_from_args

    monkeypatch.setenv("DIAM_CACHE", str(tmp_path / "cache"))
    dataset = str(_digits_dataset(tmp_path / "d"))
    settings = lambda *flags: settings_from_args(cli.parser("t", method_required=False).parse_args(  # noqa: E731
        ["--dataset", dataset, "--al_iter", "0", "--model_num", "1", "--work_dir", str(tmp_path / "runs"),
         "--preset", "repro", *flags]))
    whole = settings()
    assert (whole.preset.pool_size, whole.preset.test_size) == (None, None)
    assert whole.preset.initial_labeled == 200  # the rest of the preset stands
    part = settings("--pool_size", "20", "--test_size", "10")
    assert (part.preset.pool_size, part.preset.test_size) == (20, 10)
    data = Run(part).data
    assert (len(data.pool_labels), len(data.test_labels)) == (20, 10)
    builtin = settings_from_args(cli.parser("t", method_required=False).parse_args(
        ["--dataset", "digits", "--al_iter", "0", "--model_num", "1", "--preset", "repro"]))
    assert (builtin.preset.pool_size, builtin.preset.test_size) == (3000, 2000)


def test_run_grid_takes_dataset_files_and_named_nets_as_iter_all_does(tmp_path):
    from diam import cli, grid, plan

    runs = tmp_path / "runs"
    described = _digits_dataset(tmp_path / "d", name="grid_digits")
    argv = ["--preset", "quick", "--datasets", str(described), "digits", "--model_nums", "2", "--methods", "DIAM",
            "--nets", "ofa0", "resnet18", "--work_dir", str(runs)]
    steps = plan.steps(grid.check_args(*grid.parse_args(argv)))
    assert {Path(s.log).relative_to(runs / "quick" / "logs").parts[0] for s in steps} == {"grid_digits", "digits"}
    assert all("--nets ofa0 resnet18" in s.command for s in steps)
    assert cli.step_outputs(steps[0]) == [RunPaths(runs, "quick", "grid_digits").checkpoint(2, "random", 0, 0)]
    with pytest.raises(UserError, match="--model_nums must be 2"):
        grid.check_args(*grid.parse_args([*argv, "--model_nums", "2", "4"]))
    with pytest.raises(UserError, match="unknown dataset"):
        grid.check_args(*grid.parse_args([*argv, "--datasets", "cifar10"]))
