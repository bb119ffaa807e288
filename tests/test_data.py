"""SPEC section 3: datasets as uint8 pools, and the train/eval transforms on batches."""
import gzip
import math
import socket
import struct

import numpy as np
import pytest
import torch
from torchvision import transforms

from diam import augment, data
from diam.errors import UserError


def test_digits_is_an_offline_uint8_pool_and_test_split():
    d = data.load_dataset("digits")
    assert d.pool_images.dtype == torch.uint8 and d.pool_images.shape[1:] == (8, 8)
    assert len(d.pool_images) + len(d.test_images) == 1797
    assert len(d.test_images) == data.DIGITS_TEST_SIZE
    assert int(d.pool_images.max()) == 255 and d.n_classes == 10
    assert set(d.test_labels.tolist()) == set(range(10))


def test_pool_and_test_subsets_are_fixed_by_the_seed():
    a = data.load_dataset("digits", pool_size=300, test_size=100)
    b = data.load_dataset("digits", pool_size=300, test_size=100)
    assert len(a.pool_labels) == 300 and len(a.test_labels) == 100
    for same in (lambda d: d.pool_images, lambda d: d.pool_labels, lambda d: d.test_images, lambda d: d.test_labels):
        assert torch.equal(same(a), same(b))
    other = data.load_dataset("digits", pool_size=300, test_size=100, seed=1)
    assert not torch.equal(a.pool_images, other.pool_images) and not torch.equal(a.test_images, other.test_images)


def _write_idx(path, array, magic):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in array.shape))
        f.write(array.astype(np.uint8).tobytes())


def test_fashion_mnist_gz_files_alone_are_found_and_unpacked(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 50), ("t10k", 20)):
        _write_idx(raw / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)), 0x803)
        _write_idx(raw / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)), 0x801)
    d = data.load_dataset("fmnist", tmp_path)
    assert d.pool_images.shape == (50, 28, 28) and d.test_images.shape == (20, 28, 28)
    assert d.pool_images.dtype == torch.uint8


@pytest.mark.parametrize("unpacked", [False, True], ids=["gz_only", "already_unpacked"])
def test_a_read_only_data_folder_is_read_and_never_written(tmp_path, unpacked):
    shared, cache = tmp_path / "shared", tmp_path / "cache"
    raw = shared / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 50), ("t10k", 20)):
        _write_idx(raw / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)), 0x803)
        _write_idx(raw / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)), 0x801)
        if unpacked:  # as torchvision leaves a folder it downloaded into
            for kind in ("images-idx3", "labels-idx1"):
                gz = raw / f"{split}-{kind}-ubyte.gz"
                gz.with_suffix("").write_bytes(gzip.decompress(gz.read_bytes()))
    before = sorted(p.name for p in raw.iterdir())
    for folder in (raw, raw.parent, shared):
        folder.chmod(0o555)
    try:
        d = data.load_dataset("fmnist", shared, cache=cache)
    finally:
        for folder in (shared, raw.parent, raw):
            folder.chmod(0o755)
    assert d.pool_images.shape == (50, 28, 28) and d.test_images.shape == (20, 28, 28)
    assert sorted(p.name for p in raw.iterdir()) == before
    # Files already unpacked are read where they are; .gz files alone are unpacked into the cache.
    assert (cache / "datasets" / "FashionMNIST" / "raw").exists() != unpacked


def test_missing_dataset_names_the_files_and_where_to_put_them(tmp_path, monkeypatch):
    looked_up = []  # the download is tried, and refused by the tests' network guard (conftest.py)
    guard = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: looked_up.append(host) or guard(host, *a, **k))
    root = tmp_path / "data"
    with pytest.raises(UserError) as err:
        data.load_dataset("kmnist", root)
    message = str(err.value)
    assert "train-images-idx3-ubyte" in message and str(root) in message and "--data_root" in message
    assert "use --dataset digits" in message
    # The scripts' way out is kept apart, for a caller without --dataset (examples/make_png_folder.py).
    assert isinstance(err.value, data.DatasetMissing) and message.startswith(err.value.where)
    assert "--dataset" not in err.value.where
    assert looked_up and not root.exists()  # the failed download leaves no folder behind


def test_a_failed_download_leaves_none_of_the_roots_missing_parents_behind(tmp_path):
    # A data root beside the project that is not there (../shared/datasets on a fresh clone): torchvision
    # makes the whole chain before it downloads, and none of it stays when the download fails.
    root = tmp_path / "shared" / "datasets"
    with pytest.raises(data.DatasetMissing, match="could not be downloaded"):
        data.load_dataset("fmnist", root)
    assert list(tmp_path.iterdir()) == []


def test_gz_files_found_elsewhere_are_not_unpacked_into_a_root_that_is_not_there(tmp_path, monkeypatch):
    system, cache = tmp_path / "system", tmp_path / "cache"
    system.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 50), ("t10k", 20)):
        _write_idx(system / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)), 0x803)
        _write_idx(system / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)), 0x801)
    monkeypatch.setattr(data, "SYSTEM_LOCATIONS", {"fmnist": [system]})
    root = tmp_path / "shared" / "datasets"
    d = data.load_dataset("fmnist", root, cache=cache)
    assert d.pool_images.shape == (50, 28, 28)
    assert not (tmp_path / "shared").exists() and (cache / "datasets" / "FashionMNIST" / "raw").is_dir()


def _write_test_split(root, folder, n=10_000):
    """An official-looking t10k split of `n` images, 1,000 per class in random order, each image
    carrying its own index in its first two pixels (so a split can be traced back)."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.arange(n) % 10)
    images = rng.integers(0, 256, (n, 28, 28))
    images[:, 0, 0], images[:, 0, 1] = np.arange(n) // 256, np.arange(n) % 256
    _write_idx(raw / "t10k-images-idx3-ubyte.gz", images, 0x803)
    _write_idx(raw / "t10k-labels-idx1-ubyte.gz", labels, 0x801)
    return labels


def _indices(images: torch.Tensor) -> np.ndarray:
    return (images[:, 0, 0].long() * 256 + images[:, 0, 1].long()).numpy()


@pytest.mark.parametrize("name, folder", [("mnist10k", "MNIST"), ("kmnist10k", "KMNIST")])
def test_a_test_split_dataset_splits_the_t10k_files_once_stratified_by_class(tmp_path, name, folder):
    labels = _write_test_split(tmp_path, folder)  # the training split's files are absent, as offline
    d = data.load_dataset(name, tmp_path)
    assert d.pool_images.shape == (8000, 28, 28) and d.test_images.shape == (2000, 28, 28) and d.n_classes == 10
    pool, test = _indices(d.pool_images), _indices(d.test_images)
    assert len(np.union1d(pool, test)) == 10_000  # every image once, in one part only
    assert np.array_equal(labels[pool], d.pool_labels.numpy()) and np.array_equal(labels[test], d.test_labels.numpy())
    assert np.bincount(d.test_labels.numpy(), minlength=10).tolist() == [200] * 10  # stratified
    again = data.load_dataset(name, tmp_path)
    assert np.array_equal(_indices(again.test_images), test)  # fixed: every run and repeat the same
    assert not np.array_equal(_indices(data.load_dataset(name, tmp_path, seed=1).test_images), test)
    with pytest.raises(UserError, match="train-images"):  # the full dataset still needs its training split
        data.load_dataset(name.removesuffix("10k"), tmp_path)


def test_a_test_split_dataset_without_its_files_is_refused_naming_them(tmp_path):
    with pytest.raises(data.DatasetMissing) as err:
        data.load_dataset("kmnist10k", tmp_path)
    message = str(err.value)
    assert "t10k-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert str(tmp_path / "KMNIST" / "raw") in message and "--data_root" in message and "train-" not in message
    _write_test_split(tmp_path, "KMNIST")
    (tmp_path / "KMNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").unlink()
    for unpacked in (tmp_path / "KMNIST" / "raw").glob("*-ubyte"):
        unpacked.unlink()
    with pytest.raises(data.DatasetMissing, match="t10k-labels-idx1-ubyte"):
        data.load_dataset("kmnist10k", tmp_path)


def test_unknown_dataset_is_refused():
    with pytest.raises(UserError, match="digits"):
        data.load_dataset("cifar10")


def _batch(n=16):
    return torch.randint(0, 256, (n, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def _unnormalize(x):
    mean = torch.tensor(augment.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(augment.IMAGENET_STD).view(1, 3, 1, 1)
    return x * std + mean


def test_train_transform_gives_three_identical_normalised_channels_in_range():
    x = augment.train_transform(_batch(), 40, torch.Generator().manual_seed(0))
    assert x.shape == (16, 3, 40, 40) and x.dtype == torch.float32
    pixels = _unnormalize(x)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    torch.testing.assert_close(pixels[:, 0], pixels[:, 2])


def test_train_transform_draws_parameters_per_sample():
    same = _batch(1).expand(8, -1, -1).contiguous()  # one image eight times
    x = augment.train_transform(same, 32, torch.Generator().manual_seed(0))
    distinct = {tuple(v.flatten()[:64].tolist()) for v in x}
    assert len(distinct) == 8


def test_random_crop_boxes_respect_scale_and_ratio():
    boxes = augment.random_crop_boxes(4000, 28, 28, torch.Generator().manual_seed(0))
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 28).all() and (boxes[:, 3] <= 28).all()
    area = w * h / 784
    assert area.min() >= 0.08 * 0.7 and area.max() <= 1.0  # rounding to whole pixels loosens the floor
    assert area.std() > 0.1


def test_train_transform_is_reproducible_from_the_generator():
    a = augment.train_transform(_batch(), 32, torch.Generator().manual_seed(5))
    b = augment.train_transform(_batch(), 32, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)


def test_eval_transform_resizes_then_center_crops():
    size = 32
    x = augment.eval_transform(_batch(), size)
    assert x.shape == (16, 3, size, size)
    # torchvision's Resize(37) then CenterCrop(32), on the same float image.
    reference = transforms.Compose([transforms.Resize(math.ceil(size / 0.875), antialias=True),
                                    transforms.CenterCrop(size)])(_batch().float().div(255).unsqueeze(1))
    torch.testing.assert_close(_unnormalize(x)[:, :1], reference, atol=1e-5, rtol=0)
    # A bright 1-pixel frame is enlarged to under 2 pixels and cropped away (2 to 3 pixels a side).
    framed = torch.zeros((1, 28, 28), dtype=torch.uint8)
    framed[:, [0, -1], :] = framed[:, :, [0, -1]] = 255
    assert _unnormalize(augment.eval_transform(framed, size)).max() < 0.01
    flat = torch.full((2, 28, 28), 128, dtype=torch.uint8)
    torch.testing.assert_close(_unnormalize(augment.eval_transform(flat, size)),
                               torch.full((2, 3, size, size), 128 / 255))
