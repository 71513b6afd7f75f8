"""Tests of the datasets and the class-balanced prune sample."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from pruners.data import (
    DATASETS,
    Dataset,
    PruneSample,
    dataset_options,
    images_to_tensor,
    load_dataset,
    prune_sample,
)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def test_digits_shapes_sizes_and_dtypes(digits: Dataset) -> None:
    x, y = digits.train.tensors
    x_test, y_test = digits.test.tensors
    assert digits.name == "digits"
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10
    assert x.shape == (1437, 1, 8, 8) and x_test.shape == (360, 1, 8, 8)
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and y_test.dtype == torch.int64
    assert set(y.tolist()) == set(range(10)) == set(y_test.tolist())


def test_digits_split_is_stratified_and_disjoint(digits: Dataset) -> None:
    y_all = torch.tensor(load_digits().target)
    y, y_test = digits.train.tensors[1], digits.test.tensors[1]
    # Every class keeps its overall proportion in the test split, to within one example.
    expected = torch.bincount(y_all, minlength=10) * 360 / len(y_all)
    assert (torch.bincount(y_test, minlength=10) - expected).abs().max() <= 1
    assert torch.equal(torch.bincount(y, minlength=10) + torch.bincount(y_test, minlength=10),
                       torch.bincount(y_all, minlength=10))  # fmt: skip


def test_digits_normalized_with_training_statistics(digits: Dataset) -> None:
    x = digits.train.tensors[0]
    assert abs(x.mean().item()) < 1e-5
    assert abs(x.std(unbiased=False).item() - 1) < 1e-5
    # The test split uses the training statistics: its values are the raw pixels mapped the same
    # way, so mean/std are near but not exactly 0/1.
    x_test = digits.test.tensors[0]
    assert abs(x_test.mean().item()) < 0.1 and abs(x_test.std().item() - 1) < 0.1


def test_digits_raw_mean_is_mean_of_raw_training_pixels(digits: Dataset) -> None:
    raw = load_digits()
    images = torch.tensor(raw.images, dtype=torch.float32).flatten(1) / 16
    x, y = digits.train.tensors
    assert digits.raw_mean.shape == (1, 8, 8)
    assert (digits.raw_mean >= 0).all() and digits.raw_mean.max() <= 1
    # One channel: normalization is one increasing affine map for all pixels, and the training
    # split holds pixels of value 0 and 16, so min-max rescaling undoes it exactly.
    flat = x.flatten(1)
    recovered = (flat - flat.min()) / (flat.max() - flat.min())
    distance, index = torch.cdist(recovered, images).min(dim=1)
    assert distance.max() < 1e-2  # distinct images differ by >= 1/16 in some pixel
    assert len(set(index.tolist())) == len(index)  # a split, without repeats
    assert torch.equal(torch.tensor(raw.target)[index], y)
    torch.testing.assert_close(digits.raw_mean.flatten(), images[index].mean(0))


def test_digits_deterministic_for_a_seed_and_varies_with_it() -> None:
    a, b = load_dataset("digits", seed=1), load_dataset("digits", seed=1)
    c = load_dataset("digits", seed=2)
    for split in ("train", "test"):
        for ta, tb in zip(getattr(a, split).tensors, getattr(b, split).tensors, strict=True):
            assert torch.equal(ta, tb)
    assert not torch.equal(a.test.tensors[1], c.test.tensors[1])


def test_dataset_pickles(digits: Dataset) -> None:
    copy = pickle.loads(pickle.dumps(digits))
    assert torch.equal(copy.train.tensors[0], digits.train.tensors[0])
    assert torch.equal(copy.raw_mean, digits.raw_mean)


def test_dataset_is_frozen_and_checks_raw_mean(digits: Dataset) -> None:
    with pytest.raises(AttributeError):
        digits.num_classes = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match=r"raw_mean must have shape input_shape=\(1, 8, 8\)"):
        Dataset("x", digits.train, digits.test, (1, 8, 8), 10, torch.zeros(64))


def test_synthetic_defaults_shapes_and_non_negative_raw() -> None:
    data = load_dataset("synthetic")
    assert dataset_options("synthetic") == {
        "num_classes": 10, "input_shape": (1, 8, 8), "n_train": 1000, "n_test": 200,
        "noise": 0.75,
    }  # fmt: skip
    x, y = data.train.tensors
    assert x.shape == (1000, 1, 8, 8) and data.test.tensors[0].shape == (200, 1, 8, 8)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.bincount(y, minlength=10).min() > 50
    assert (data.raw_mean >= 0).all() and data.raw_mean.shape == (1, 8, 8)
    assert abs(x.mean().item()) < 1e-5 and abs(x.std(unbiased=False).item() - 1) < 1e-5


def test_synthetic_options_and_per_channel_normalization() -> None:
    data = load_dataset("synthetic", num_classes=3, input_shape=(2, 4, 5), n_train=90, n_test=30)
    x, y = data.train.tensors
    assert x.shape == (90, 2, 4, 5) and data.num_classes == 3 and set(y.tolist()) == {0, 1, 2}
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(mean, torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(std, torch.ones(2), atol=1e-5, rtol=0)
    flat = load_dataset("synthetic", input_shape=(12,), n_train=50, n_test=10)
    assert flat.train.tensors[0].shape == (50, 12) and flat.raw_mean.shape == (12,)


def test_synthetic_deterministic_for_a_seed() -> None:
    a, b = load_dataset("synthetic", seed=5), load_dataset("synthetic", seed=5)
    c = load_dataset("synthetic", seed=6)
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    assert torch.equal(a.test.tensors[1], b.test.tensors[1])
    assert not torch.equal(a.train.tensors[0], c.train.tensors[0])


def test_synthetic_is_learnable_by_a_small_mlp() -> None:
    data = load_dataset("synthetic", seed=0)
    x, y = data.train.tensors
    x_test, y_test = data.test.tensors
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):  # full-batch steps
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    assert accuracy > 0.5  # chance is 0.1; measured 0.82


def test_synthetic_bad_options() -> None:
    with pytest.raises(ValueError, match="num_classes >= 2 must hold, but got num_classes=1"):
        load_dataset("synthetic", num_classes=1)
    with pytest.raises(ValueError, match="n_train must be a positive integer, but got n_train=0"):
        load_dataset("synthetic", n_train=0)
    with pytest.raises(ValueError, match="noise >= 0 must hold, but got noise=-1"):
        load_dataset("synthetic", noise=-1)
    with pytest.raises(ValueError, match="input_shape entries must be a positive integer"):
        load_dataset("synthetic", input_shape=(1, 0, 8))


def test_prune_sample_balanced_and_from_training_split(digits: Dataset) -> None:
    sample = prune_sample(digits, per_class=7, seed=0)
    assert isinstance(sample, PruneSample)
    assert sample.x.shape == (70, 1, 8, 8) and sample.y.dtype == torch.int64
    assert torch.equal(torch.bincount(sample.y, minlength=10), torch.full((10,), 7))
    assert torch.equal(sample.raw_mean, digits.raw_mean)
    x, y = digits.train.tensors
    # Each sampled example is a distinct training example with its own label.
    index = torch.cdist(sample.x.flatten(1), x.flatten(1)).argmin(dim=1)
    assert len(set(index.tolist())) == 70
    assert torch.equal(y[index], sample.y)
    assert torch.equal(x[index], sample.x)


def test_prune_sample_deterministic_for_a_seed(digits: Dataset) -> None:
    a, b = prune_sample(digits, 5, seed=3), prune_sample(digits, 5, seed=3)
    c = prune_sample(digits, 5, seed=4)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)


def test_prune_sample_bad_per_class(digits: Dataset) -> None:
    with pytest.raises(ValueError, match="per_class >= 1 must hold, but got per_class=0"):
        prune_sample(digits, per_class=0)
    smallest = int(torch.bincount(digits.train.tensors[1]).min())
    assert len(prune_sample(digits, per_class=smallest).y) == 10 * smallest
    with pytest.raises(ValueError, match=rf"has {smallest} training examples, fewer than"):
        prune_sample(digits, per_class=smallest + 1)


def test_unknown_dataset_and_option_list_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown dataset 'svhn'; valid: \['cifar10', 'cifar100'"):
        load_dataset("svhn")
    with pytest.raises(ValueError, match=r"unknown option 'n_trian' for dataset 'synthetic'; val"):
        load_dataset("synthetic", n_trian=10)
    with pytest.raises(
        ValueError, match=r"unknown option 'noise' for dataset 'digits'; valid: \[\]"
    ):
        load_dataset("digits", noise=0.1)


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100"])
def test_torchvision_datasets_need_root(name: str) -> None:
    with pytest.raises(ValueError, match=rf"dataset '{name}' needs a data directory: pass root="):
        load_dataset(name)


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100"])
def test_torchvision_datasets_without_torchvision_say_how_to_install(
    name: str, tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes `import torchvision` fail, as on a machine without the extra.
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(RuntimeError, match=r"pip install 'pathsweep\[vision\]'") as info:
        load_dataset(name, root=str(tmp_path))
    assert "\n" not in str(info.value)


def test_images_to_tensor_matches_to_tensor_convention() -> None:
    gray = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    out = images_to_tensor(torch.from_numpy(gray))
    assert out.shape == (2, 1, 3, 4) and out.dtype == torch.float32
    torch.testing.assert_close(out[1, 0], torch.from_numpy(gray[1]).float() / 255)
    rgb = np.random.default_rng(0).integers(0, 256, size=(2, 5, 6, 3), dtype=np.uint8)
    out = images_to_tensor(rgb)
    assert out.shape == (2, 3, 5, 6)
    torch.testing.assert_close(out[1, 2], torch.from_numpy(rgb[1, :, :, 2]).float() / 255)
    with pytest.raises(ValueError, match="images must be uint8"):
        images_to_tensor(np.zeros((2, 3), dtype=np.uint8))


def test_registry_names() -> None:
    assert sorted(DATASETS) == ["cifar10", "cifar100", "digits", "mnist", "synthetic"]
