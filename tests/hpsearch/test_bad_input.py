"""Bad input, everywhere: one line on stderr, the right exit code, nothing written.

Every case runs ``hpsearch ...`` on a valid study file or database that has
one thing wrong, and checks what a user relies on:

* the exit code: 2 for input the user can fix, 1 for a service (PostgreSQL
  server, Ray cluster) that does not answer within a bounded wait;
* stderr is exactly one line, ``hpsearch: error: ...``, naming what is wrong
  (and, through the case's words, how to fix it); no traceback; stdout empty;
* nothing is written: no database file, no study or table added to an existing
  database, no report directory, no export file; every file in the working
  directory is byte-for-byte unchanged.

A few cases also run ``python -m hpsearch`` as a real process, so nothing a
library prints (Ray's C++ logger, a traceback) can reach the terminal.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pytest

from hpsearch.cli import main
from tests.hpsearch.fake_study import postgres_database

STUDY = """\
[study]
name = "bad"
seed = 3
metric = "val_accuracy"
sampler = "random"
pruner = "none"

[data]
dataset = "digits"
train_samples = 100

[model]
hidden_sizes = [8]
epochs = 1
optimizer = "sgd"
backend = "numpy"

[search.lr]
low = 1e-3
high = 1.0
log = true

[search.dropout_ratio]
low = 0.0
high = 0.5

[narrowing]
rounds = 1
trials_per_round = 2
top_k = 1

[resources]
workers = 1
"""

#: The study already recorded in ``existing.db`` (one finished trial).
KEPT = "keep"


def edit(old: str, new: str, text: str = STUDY) -> str:
    """The study text with ``old`` replaced by ``new`` (which must be there)."""
    assert old in text, old
    return text.replace(old, new, 1)


@dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes:
        id: The test id.
        argv: The command line; ``{dir}`` is the working directory (absolute),
            ``{study}`` the study file written from ``text``.
        code: Expected exit code.
        words: Lower-case fragments the error line must contain: what is wrong
            and what to do about it.
        text: The study file's text (None: no study file is written).
    """

    id: str
    argv: tuple[str, ...]
    code: int
    words: tuple[str, ...]
    text: str | None = STUDY


def run_case(*argv: str) -> tuple[str, ...]:
    return ("run", "{study}", "--storage", "sqlite:///{dir}/new.db", "--quiet", *argv)


# --------------------------------------------------------------------------- data files


def _idx(path: Path, magic: int, array: np.ndarray) -> None:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _mnist_dir(folder: Path, *, truncate: bool = False, bad_gzip: bool = False) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir()
    _idx(folder / "train-images-idx3-ubyte", 0x803, rng.integers(0, 256, (50, 4, 4)))
    _idx(folder / "train-labels-idx1-ubyte", 0x801, rng.integers(0, 10, 50))
    _idx(folder / "t10k-images-idx3-ubyte", 0x803, rng.integers(0, 256, (10, 4, 4)))
    _idx(folder / "t10k-labels-idx1-ubyte", 0x801, rng.integers(0, 10, 10))
    images = folder / "train-images-idx3-ubyte"
    if truncate:  # a download that stopped half way
        images.write_bytes(images.read_bytes()[:300])
    if bad_gzip:
        damaged = bytearray(gzip.compress(images.read_bytes()))
        damaged[12:20] = b"\xff" * 8  # gzip magic, then a damaged deflate stream
        (folder / "train-images-idx3-ubyte.gz").write_bytes(bytes(damaged))
        images.unlink()


def make_world(root: Path) -> None:
    """The files every case can point at (made once per test in its own directory)."""
    (root / "garbage.npz").write_bytes(np.random.default_rng(1).bytes(4096))
    np.savez(root / "nokeys.npz", a=np.zeros((4, 2)))
    np.savez(root / "scaled.npz", x=np.full((30, 4), 7.5, dtype=np.float32), y=np.arange(30) % 3)
    (root / "empty").mkdir()
    _mnist_dir(root / "truncated", truncate=True)
    _mnist_dir(root / "badgzip", bad_gzip=True)
    (root / "notadb.db").write_text("these are not the tables you are looking for\n")
    (root / "adir.db").mkdir()
    (root / "adir.toml").mkdir()
    (root / "latin1.toml").write_bytes(STUDY.replace('"bad"', '"b\xe9"').encode("latin-1"))
    (root / "afile").write_text("a file, not a directory\n")


@pytest.fixture(scope="module")
def existing_db(tmp_path_factory) -> Path:
    """A results database holding study ``keep`` with one finished trial."""
    path = tmp_path_factory.mktemp("existing") / "existing.db"
    study = optuna.create_study(study_name=KEPT, storage=f"sqlite:///{path}", direction="maximize")
    study.add_trial(
        optuna.trial.create_trial(
            params={"lr": 0.01},
            distributions={"lr": optuna.distributions.FloatDistribution(1e-3, 1.0, log=True)},
            value=0.5,
        )
    )
    return path


# --------------------------------------------------------------------------- snapshots


def snapshot(root: Path) -> dict[str, str]:
    """Every file and directory under ``root``: its content hash (files) or 'dir'."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def db_summary(path: Path) -> list[tuple]:
    """Studies and their trial counts, read with plain sqlite3 (read-only)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return conn.execute(
            "SELECT s.study_name, COUNT(t.trial_id) FROM studies s "
            "LEFT JOIN trials t ON t.study_id = s.study_id GROUP BY s.study_id ORDER BY 1"
        ).fetchall()


# --------------------------------------------------------------------------- the table

EXISTING = ("--storage", "sqlite:///{dir}/existing.db")

CASES = [
    # -- the study file: TOML and its keys ------------------------------------------------
    Case("malformed-toml", run_case(), 2, ("malformed toml", "line"), "[study\nname = 'x'\n"),
    Case(
        "unknown-section",
        run_case(),
        2,
        ("studdy", "unknown section", "did you mean"),
        edit("[study]", "[studdy]"),
    ),
    Case(
        "unknown-model-key",
        run_case(),
        2,
        ("hiden_sizes", "unknown", "hidden_sizes"),
        edit("hidden_sizes = [8]", "hiden_sizes = [8]"),
    ),
    Case(
        "unknown-narrowing-key",
        run_case(),
        2,
        ("narrowing.round", "unknown key", "allowed"),
        edit("rounds = 1", "round = 1"),
    ),
    Case(
        "missing-data-section",
        run_case(),
        2,
        ("[data]", "missing"),
        STUDY.replace('[data]\ndataset = "digits"\ntrain_samples = 100\n', ""),
    ),
    Case(
        "wrong-type-epochs",
        run_case(),
        2,
        ("epochs", "'ten'", "expected"),
        edit("epochs = 1", 'epochs = "ten"'),
    ),
    Case(
        "wrong-type-rounds",
        run_case(),
        2,
        ("narrowing.rounds", "1.5", "expected an integer"),
        edit("rounds = 1", "rounds = 1.5"),
    ),
    Case(
        "wrong-type-range",
        run_case(),
        2,
        ("search.lr.low", "expected"),
        edit("low = 1e-3", 'low = "1e-3"'),
    ),
    # -- ranges ---------------------------------------------------------------------------
    Case(
        "empty-range",
        run_case(),
        2,
        ("search.lr", "must be <", "[model]"),
        edit("low = 1e-3\nhigh = 1.0", "low = 0.1\nhigh = 0.1"),
    ),
    Case(
        "inverted-range",
        run_case(),
        2,
        ("search.lr", "low (1.0) must be < high (0.001)"),
        edit("low = 1e-3\nhigh = 1.0", "low = 1.0\nhigh = 1e-3"),
    ),
    Case(
        "log-range-from-zero",
        run_case(),
        2,
        ("search.lr.low", "log range needs low > 0"),
        edit("low = 1e-3", "low = 0.0"),
    ),
    Case(
        "log-range-through-zero",
        run_case(),
        2,
        ("search.lr.low", "log range needs low > 0"),
        edit("low = 1e-3", "low = -1e-3"),
    ),
    Case(
        "dropout-one",
        run_case(),
        2,
        ("search.dropout_ratio.high", "1.0"),
        edit("high = 0.5", "high = 1.0"),
    ),
    Case(
        "empty-choices",
        run_case(),
        2,
        ("search.batchnorm.choices", "at least one choice"),
        STUDY + "\n[search.batchnorm]\nchoices = []\n",
    ),
    Case(
        "top-k-over-trials",
        run_case(),
        2,
        ("narrowing.top_k", "<= narrowing.trials_per_round"),
        edit("top_k = 1", "top_k = 5"),
    ),
    # -- names of things --------------------------------------------------------------------
    Case(
        "unknown-dataset",
        run_case(),
        2,
        ("data.dataset", "cifar10", "allowed"),
        edit('dataset = "digits"', 'dataset = "cifar10"'),
    ),
    Case(
        "unknown-backend",
        run_case(),
        2,
        ("model.backend", "jax", "numpy"),
        edit('backend = "numpy"', 'backend = "jax"'),
    ),
    Case(
        "unknown-optimizer",
        run_case(),
        2,
        ("model.optimizer", "adamw", "adam"),
        edit('optimizer = "sgd"', 'optimizer = "adamw"'),
    ),
    Case(
        "unknown-sampler",
        run_case(),
        2,
        ("study.sampler", "grid", "random, tpe, qmc"),
        edit('sampler = "random"', 'sampler = "grid"'),
    ),
    Case(
        "unknown-pruner",
        run_case(),
        2,
        ("study.pruner", "sha", "median"),
        edit('pruner = "none"', 'pruner = "sha"'),
    ),
    Case(
        "prune-after-without-pruner",
        run_case(),
        2,
        ("study.prune_after", "3", "study.pruner is 'none'"),
        edit('pruner = "none"', 'pruner = "none"\nprune_after = 3'),
    ),
    Case(
        "prune-after-past-the-epochs",
        run_case(),
        2,
        ("study.prune_after", "1", "below model.epochs (1)"),
        edit('pruner = "none"', 'pruner = "asha"\nprune_after = 1'),
    ),
    Case(
        "unsafe-study-name",
        run_case(),
        2,
        ("study.name", "../../etc/evil", "letters, digits"),
        edit('name = "bad"', 'name = "../../etc/evil"'),
    ),
    Case(
        "unsafe-name-option",
        run_case("--name", "a/b"),
        2,
        ("--name", "'a/b'", "letters, digits"),
    ),
    # -- data -------------------------------------------------------------------------------
    Case(
        "missing-npz",
        run_case(),
        2,
        ("/nope.npz", "does not exist", "[data] section"),
        edit('dataset = "digits"', 'dataset = "npz:/nope.npz"'),
    ),
    Case(
        "garbage-npz",
        run_case(),
        2,
        ("garbage.npz", "cannot read", "numpy.savez"),
        edit('dataset = "digits"', 'dataset = "npz:garbage.npz"'),
    ),
    Case(
        "npz-without-x-y",
        run_case(),
        2,
        ("nokeys.npz", "'x' and 'y'", "found a"),
        edit('dataset = "digits"', 'dataset = "npz:nokeys.npz"'),
    ),
    Case(
        "npz-not-scaled",
        run_case(),
        2,
        ("scaled.npz", "[0, 1]", "x / 255"),
        edit('dataset = "digits"\ntrain_samples = 100', 'dataset = "npz:scaled.npz"'),
    ),
    Case(
        "mnist-empty-dir",
        run_case(),
        2,
        ("mnist:{dir}/empty", "missing train-images-idx3-ubyte"),
        edit('dataset = "digits"', 'dataset = "mnist:{dir}/empty"'),
    ),
    Case(
        "mnist-missing-dir",
        run_case(),
        2,
        ("mnist:/no/such/dir", "does not exist"),
        edit('dataset = "digits"', 'dataset = "mnist:/no/such/dir"'),
    ),
    Case(
        "mnist-truncated-idx",
        run_case(),
        2,
        ("train-images-idx3-ubyte", "corrupt idx", "header dims"),
        edit('dataset = "digits"\ntrain_samples = 100', 'dataset = "mnist:truncated"'),
    ),
    Case(
        "mnist-corrupt-gzip",
        run_case(),
        2,
        ("train-images-idx3-ubyte.gz", "corrupt gzip"),
        edit('dataset = "digits"\ntrain_samples = 100', 'dataset = "mnist:badgzip"'),
    ),
    Case(
        "more-samples-than-data",
        run_case(),
        2,
        ("train_samples", "5000", "at most 1438"),
        edit("train_samples = 100", "train_samples = 5000"),
    ),
    # -- the results database ------------------------------------------------------------
    Case(
        "storage-postgres-scheme",
        ("run", "{study}", "--storage", "postgres://me:hunter2@db.example/hp"),
        2,
        ("postgres://me:***@db.example/hp", "postgresql://"),
    ),
    Case(
        "storage-unsupported",
        ("run", "{study}", "--storage", "mysql://u@h/db"),
        2,
        ("mysql", "unsupported", "allowed forms"),
    ),
    Case(
        "storage-not-a-url",
        ("run", "{study}", "--storage", "results.db"),
        2,
        ("results.db", "cannot be parsed", "sqlite:///"),
    ),
    Case(
        "storage-sqlite-with-host",
        ("run", "{study}", "--storage", "sqlite://host/x.db"),
        2,
        ("sqlite://host/x.db", "three slashes"),
    ),
    Case(
        "sqlite-missing-directory",
        ("run", "{study}", "--storage", "sqlite:///{dir}/no/such/dir/x.db"),
        2,
        ("{dir}/no/such/dir", "does not exist", "create it"),
    ),
    Case(
        "sqlite-path-is-directory",
        ("run", "{study}", "--storage", "sqlite:///{dir}/adir.db"),
        2,
        ("adir.db", "is a directory"),
    ),
    Case(
        "sqlite-not-a-database",
        ("run", "{study}", "--storage", "sqlite:///{dir}/notadb.db"),
        2,
        ("notadb.db", "not a sqlite database"),
    ),
    Case(
        "postgres-refused",
        ("run", "{study}", "--storage", "postgresql+psycopg://postgres:pw@127.0.0.1:1/x"),
        1,
        ("postgres:***@127.0.0.1:1", "does not answer", "connection refused", "start it"),
    ),
    Case(
        "existing-study-other-direction",
        ("run", "{study}", *EXISTING, "--name", KEPT),
        2,
        ("'keep'", "direction maximize", "--name"),
        edit('metric = "val_accuracy"', 'metric = "val_loss"'),
    ),
    Case(
        "existing-study-changed-space",
        ("run", "{study}", *EXISTING, "--name", KEPT),
        2,
        ("search.lr", "recorded study 'keep'", "--name"),
        edit("low = 1e-3\nhigh = 1.0\nlog = true", "choices = [0.01, 0.1]"),
    ),
    Case(
        "bad-data-with-existing-db",
        ("run", "{study}", *EXISTING, "--name", "another"),
        2,
        ("garbage.npz", "cannot read"),
        edit('dataset = "digits"', 'dataset = "npz:garbage.npz"'),
    ),
    # -- Ray ----------------------------------------------------------------------------------
    Case(
        "ray-address-unreachable",
        run_case("--address", "127.0.0.1:1"),
        1,
        ("--address 127.0.0.1:1", "no ray cluster answers", "omit --address"),
    ),
    Case(
        "ray-address-malformed",
        run_case("--address", "http://head:6379"),
        2,
        ("--address", "http://head:6379", "host:port"),
    ),
    Case("ray-address-empty", run_case("--address", " "), 2, ("--address", "auto")),
    # -- options --------------------------------------------------------------------------------
    Case("workers-zero", run_case("--workers", "0"), 2, ("--workers", "got 0", ">= 1")),
    Case("rounds-zero", run_case("--rounds", "0"), 2, ("--rounds", "got 0", ">= 1")),
    Case(
        "workers-not-a-number",
        run_case("--workers", "two"),
        2,
        ("--workers", "invalid int value", "'two'"),
    ),
    Case("seed-negative", run_case("--seed", "-1"), 2, ("--seed", "got -1", "[0, ")),
    Case("top-k-option", run_case("--top-k", "3"), 2, ("--top-k", "got 3", "<=")),
    Case(
        "unknown-option",
        run_case("--wrokers", "2"),
        2,
        ("unrecognized arguments", "--wrokers"),
    ),
    Case(
        "report-dir-is-a-file",
        run_case("--report", "{dir}/afile"),
        2,
        ("--report", "afile", "not a directory"),
    ),
    # -- the study file itself ------------------------------------------------------------
    Case(
        "missing-study-file",
        ("run", "{dir}/nope.toml", "--storage", "sqlite:///{dir}/new.db"),
        2,
        ("nope.toml", "not found"),
        None,
    ),
    Case(
        "directory-as-study-file",
        ("run", "{dir}/adir.toml", "--storage", "sqlite:///{dir}/new.db"),
        2,
        ("adir.toml", "is a directory"),
        None,
    ),
    Case(
        "study-file-not-utf8",
        ("run", "{dir}/latin1.toml", "--storage", "sqlite:///{dir}/new.db"),
        2,
        ("latin1.toml", "not utf-8", "save the study file as utf-8"),
        None,
    ),
    # -- reading commands ---------------------------------------------------------------------
    Case(
        "show-missing-study",
        ("show", "nope", *EXISTING),
        2,
        ("study 'nope' not found", "existing studies: keep"),
        None,
    ),
    Case(
        "show-missing-database",
        ("show", "x", "--storage", "sqlite:///{dir}/new.db"),
        2,
        ("new.db", "does not exist", "run a study first"),
        None,
    ),
    Case(
        "export-bad-format",
        ("export", KEPT, *EXISTING, "--format", "xml", "-o", "{dir}/out.xml"),
        2,
        ("--format", "'xml'", "csv"),
        None,
    ),
    Case(
        "export-unknown-suffix",
        ("export", KEPT, *EXISTING, "-o", "{dir}/out.xlsx"),
        2,
        ("out.xlsx", "export format", "csv, parquet, json"),
        None,
    ),
    Case(
        "trials-bad-sort",
        ("trials", KEPT, *EXISTING, "--sort", "nope"),
        2,
        ("--sort", "'nope'", "allowed columns"),
        None,
    ),
    Case(
        "report-missing-study",
        ("report", "nope", *EXISTING),
        2,
        ("study 'nope' not found",),
        None,
    ),
]


def test_the_table_is_big_enough():
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.fixture
def world(tmp_path, monkeypatch, existing_db):
    """A working directory with the data files and a copy of existing.db; cwd is it,
    so default outputs (hpsearch.db, reports/NAME/) would land here too."""
    make_world(tmp_path)
    shutil.copy(existing_db, tmp_path / "existing.db")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _fill(text: str, root: Path) -> str:
    return text.replace("{dir}", str(root))


def _prepare(case: Case, root: Path) -> list[str]:
    if case.text is not None:
        (root / "study.toml").write_text(_fill(case.text, root))
    return [_fill(a, root).replace("{study}", str(root / "study.toml")) for a in case.argv]


def _check_nothing_written(root: Path, before: dict[str, str], kept: list[tuple]) -> None:
    after = snapshot(root)
    assert after == before, {
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "changed": sorted(k for k in before if k in after and before[k] != after[k]),
    }
    assert db_summary(root / "existing.db") == kept


def _check_message(case: Case, code: int, out: str, err: str, root: Path) -> None:
    assert code == case.code, err
    assert out == ""
    assert err.startswith("hpsearch: error: "), err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    lowered = err.lower()
    for word in case.words:
        assert _fill(word, root).lower() in lowered, (word, err)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(case, world, capsys):
    argv = _prepare(case, world)
    before = snapshot(world)
    kept = db_summary(world / "existing.db")
    assert kept == [(KEPT, 1)]
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors exit through SystemExit
        code = exc.code
    out, err = capsys.readouterr()
    _check_message(case, code, out, err, world)
    _check_nothing_written(world, before, kept)


# --------------------------------------------------------------------------- real processes

PROCESS_CASES = [
    "malformed-toml",
    "garbage-npz",
    "mnist-truncated-idx",
    "storage-postgres-scheme",
    "postgres-refused",
    "ray-address-unreachable",
    "workers-zero",
    "show-missing-study",
]

#: Longest a bad --address may keep the user waiting (the check's own bound is 15 s).
ADDRESS_BOUND = 30.0


@pytest.mark.slow
@pytest.mark.parametrize("case_id", PROCESS_CASES)
def test_bad_input_in_a_real_process(case_id, world):
    """``python -m hpsearch``: only our line reaches the terminal (no traceback, no
    Ray or C++ log lines), within a bounded time, and nothing is written."""
    case = next(c for c in CASES if c.id == case_id)
    argv = _prepare(case, world)
    before = snapshot(world)
    kept = db_summary(world / "existing.db")
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "hpsearch", *argv],
        cwd=world,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - start
    _check_message(case, proc.returncode, proc.stdout, proc.stderr, world)
    assert elapsed < ADDRESS_BOUND, f"took {elapsed:.1f} s"
    _check_nothing_written(world, before, kept)


# --------------------------------------------------------------------------- PostgreSQL


def _pg_tables(url: str) -> list[str]:
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    return sorted(r[0] for r in rows)


@pytest.mark.postgres
@pytest.mark.parametrize(
    "extra, text, code, words",
    [
        ((), edit('dataset = "digits"', 'dataset = "npz:garbage.npz"'), 2, ("garbage.npz",)),
        (("--address", "127.0.0.1:1"), STUDY, 1, ("no ray cluster answers",)),
        (("--workers", "0"), STUDY, 2, ("--workers",)),
    ],
    ids=["garbage-npz", "ray-unreachable", "workers-zero"],
)
def test_bad_input_creates_no_tables_in_a_fresh_postgres_database(
    world, capsys, extra, text, code, words
):
    with postgres_database() as url:
        (world / "study.toml").write_text(text)
        capsys.readouterr()
        result = main(["run", str(world / "study.toml"), "--storage", url, "--quiet", *extra])
        out, err = capsys.readouterr()
        assert result == code and out == "" and err.count("\n") == 1, err
        assert err.startswith("hpsearch: error: ")
        assert all(w in err.lower() for w in words), err
        assert _pg_tables(url) == []


@pytest.mark.postgres
def test_missing_postgres_database_says_create_it(world, capsys):
    with postgres_database() as url:
        missing = url.rsplit("/", 1)[0] + "/hpsearch_no_such_database"
        (world / "study.toml").write_text(STUDY)
        capsys.readouterr()
        code = main(["run", str(world / "study.toml"), "--storage", missing, "--quiet"])
        out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "hpsearch_no_such_database" in err and "does not exist" in err
    assert "create the database" in err
