"""Secrets stay secret; study files and data files are data, never code.

* A password in a PostgreSQL storage URL never appears on stdout or stderr
  (progress, summary), in log records, in the one-line errors of bad or
  unreachable URLs, nor anywhere in the results database (every text column of
  every table, including the recorded study file and overrides).
* A study file is parsed as TOML data: a value that looks like Python stays a
  string and fails validation with a clean one-line error; nothing runs.
* Nothing untrusted is unpickled: no pickle/eval/exec on user files in the
  packages (checked on the source), and an .npz whose arrays would run code
  when unpickled is refused with a clean error, the code never running.
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import numpy as np
import pytest

import hpsearch
import trainer
from hpsearch import results
from hpsearch.cli import main
from hpsearch.storage_url import mask_url, open_storage, parse_storage_url
from tests.hpsearch.fake_study import postgres_database
from tests.hpsearch.studies_for_tests import small_study

PASSWORD = "s3cr3t-pw"
#: A password with URL-special characters, as it appears URL-encoded in a URL.
ODD_PASSWORD = "p@ss:w/rd%"
ODD_ENCODED = "p%40ss%3Aw%2Frd%25"


def with_password(url: str, password: str = PASSWORD) -> str:
    """``postgresql+psycopg://postgres@host/db`` -> ``...://postgres:PASSWORD@host/db``."""
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{password}@{host}"


def dump_text(url: str) -> str:
    """Every value of every column of every table of the database, as text."""
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    chunks: list[str] = []
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            ).fetchall()
        ]
        for table in tables:
            chunks.append(table)
            for row in conn.execute(f'SELECT * FROM "{table}"').fetchall():
                chunks.extend("" if v is None else str(v) for v in row)
    return "\n".join(chunks)


# --------------------------------------------------------------------------- a real run


@pytest.mark.postgres
@pytest.mark.ray
@pytest.mark.slow
def test_password_never_shown_logged_or_recorded(tmp_path, ray_local, capsys, caplog):
    import optuna

    caplog.set_level(logging.DEBUG)
    optuna.logging.enable_propagation()  # Optuna's own records reach caplog too
    try:
        _run_with_password(tmp_path, capsys, caplog)
    finally:
        optuna.logging.disable_propagation()


def _run_with_password(tmp_path, capsys, caplog):
    study = small_study(tmp_path / "secret.toml", "secret", epochs=1, rounds=2, trials=4)
    with postgres_database() as plain:
        url = with_password(plain)
        assert PASSWORD in url
        # -v: debug logging from hpsearch and Optuna too; no --quiet: live progress.
        code = main(["-v", "run", str(study), "--storage", url, "--name", "secret"])
        out, err = capsys.readouterr()
        assert code == 0, err
        # The run really happened and was really recorded (so the checks below bite).
        assert "best: trial" in out
        assert "hpsearch: storage postgresql+psycopg://postgres:***@" in err
        trials = results.trials(url, "secret")
        assert (trials["state"] == "COMPLETE").sum() == 8

        # Reading it back through the CLI shows no password either.
        for argv in (["ls"], ["show", "secret"], ["trials", "secret"]):
            assert main([*argv, "--storage", url]) == 0
        read_out, read_err = capsys.readouterr()
        assert "secret" in read_out

        dumped = dump_text(url)

    assert "hpsearch:study_file" in dumped and "trials_per_round = 4" in dumped
    assert '"name": "secret"' in dumped  # the recorded overrides
    loggers = {r.name.split(".")[0] for r in caplog.records}
    assert {"optuna", "hpsearch"} & loggers, loggers  # the logs were really captured
    for where, text in {
        "stdout": out + read_out,
        "stderr": err + read_err,
        "logs": "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records),
        "database": dumped,
    }.items():
        assert PASSWORD not in text, f"the password appears in the {where}"


# --------------------------------------------------------------------------- errors


BAD_URLS = [
    # (URL, exit code, what the one line must say)
    (f"postgres://me:{PASSWORD}@db.example/hp", 2, "postgres://me:***@db.example/hp"),
    (f"postgresql://me:{PASSWORD}@/hp", 2, "needs a host"),
    (f"postgresql://me:{PASSWORD}@db.example", 2, "needs a database name"),
    (f"mysql://me:{PASSWORD}@db.example/hp", 2, "unsupported database"),
    (f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:1/x", 1, "does not answer"),
    (f"postgresql+psycopg://postgres:{ODD_ENCODED}@127.0.0.1:1/x", 1, "postgres:***@"),
    (f"postgresql+psycopg://postgres@127.0.0.1:1/x?password={PASSWORD}", 1, "password=***"),
    (f"postgresql+psycopg://postgres:{PASSWORD}@no-such-host.invalid/x", 2, "unknown host"),
]


@pytest.mark.parametrize("url, code, words", BAD_URLS, ids=[str(i) for i in range(len(BAD_URLS))])
def test_bad_storage_url_errors_mask_the_password(tmp_path, capsys, caplog, url, code, words):
    caplog.set_level(logging.DEBUG)
    study = small_study(tmp_path / "s.toml", "s", epochs=1, rounds=1, trials=3)
    assert main(["run", str(study), "--storage", url, "--quiet"]) == code
    _, err = capsys.readouterr()
    assert err.startswith("hpsearch: error: ") and err.count("\n") == 1, err
    assert words in err
    # The reading commands say the same thing, masked (exit 2: they report, not wait).
    assert main(["ls", "--storage", url]) in (1, 2)
    _, err2 = capsys.readouterr()
    assert err2.count("\n") == 1
    logs = " ".join(r.getMessage() for r in caplog.records)
    for secret in (PASSWORD, ODD_PASSWORD, ODD_ENCODED):
        assert secret not in err + err2 + logs


@pytest.mark.postgres
def test_missing_database_error_masks_the_password(tmp_path, capsys):
    study = small_study(tmp_path / "s.toml", "s", epochs=1, rounds=1, trials=3)
    with postgres_database() as plain:
        missing = with_password(plain).rsplit("/", 1)[0] + "/hpsearch_no_such_db"
        code = main(["run", str(study), "--storage", missing, "--quiet"])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1
    assert "hpsearch_no_such_db" in err and "does not exist" in err
    assert PASSWORD not in err and "postgres:***@" in err


def test_library_errors_and_masking_hide_the_password():
    for url in (
        f"postgresql://u:{PASSWORD}@h/db",
        f"postgresql+psycopg2://u:{ODD_ENCODED}@h:5/db",
        f"postgresql://u@h/db?sslmode=require&password={PASSWORD}",
    ):
        assert PASSWORD not in mask_url(url) and ODD_ENCODED not in mask_url(url)
        assert parse_storage_url(url).masked == mask_url(url)
    from hpsearch.errors import StorageError

    with pytest.raises(StorageError) as info:
        open_storage(f"postgresql+psycopg://me:{PASSWORD}@127.0.0.1:1/db", create=True, timeout=2)
    assert PASSWORD not in str(info.value) and "me:***@" in str(info.value)


# --------------------------------------------------------------------------- study files are data

CODE = "__import__('os').system('touch {marker}')"


@pytest.mark.parametrize(
    "old, new, key",
    [
        ('dataset = "digits"', 'dataset = "{code}"', "data.dataset"),
        ("epochs = 1", 'epochs = "{code}"', "model.epochs"),
        ("batch_size = 40", 'optimizer = "{code}"\nbatch_size = 40', "model.optimizer"),
        ('name = "s"', 'name = "{code}"', "study.name"),
        ("low = 0.001", 'low = "{code}"', "search.lr.low"),
        (
            "[narrowing]",
            '[search.batchnorm]\nchoices = ["{code}"]\n\n[narrowing]',
            "search.batchnorm.choices[0]",
        ),
    ],
    ids=["dataset", "epochs", "optimizer", "name", "range", "choices"],
)
def test_python_in_a_study_file_stays_a_string(tmp_path, capsys, old, new, key):
    marker = tmp_path / "pwned"
    code = CODE.format(marker=marker)
    study = small_study(tmp_path / "s.toml", "s", epochs=1, rounds=1, trials=3)
    text = study.read_text()
    assert old in text, old
    study.write_text(text.replace(old, new.format(code=code), 1))
    db = tmp_path / "r.db"
    assert main(["run", str(study), "--storage", f"sqlite:///{db}", "--quiet"]) == 2
    _, err = capsys.readouterr()
    assert err.startswith("hpsearch: error: ") and err.count("\n") == 1, err
    assert key in err
    assert not marker.exists(), "the study file's text was executed"
    assert not db.exists()


def test_toml_value_is_parsed_as_a_plain_string(tmp_path):
    from hpsearch.config import tomllib

    marker = tmp_path / "pwned"
    data = tomllib.loads(f'value = "{CODE.format(marker=marker)}"')
    assert data["value"] == CODE.format(marker=marker)
    assert not marker.exists()


# --------------------------------------------------------------------------- no unpickling


class _Trap:
    """Unpickling this opens (creates) the marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_npz_with_pickled_objects_is_refused_and_never_unpickled(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.npz"
    x = np.empty((4, 1), dtype=object)
    for i in range(4):
        x[i, 0] = _Trap(marker)
    np.savez(evil, x=x, y=np.arange(4))
    assert not marker.exists()
    # Even the plain pickle of one array (np.save of an object array) is refused.
    single = tmp_path / "evil.npy.npz"
    with single.open("wb") as handle:
        np.save(handle, x, allow_pickle=True)

    for path in (evil, single):
        study = small_study(tmp_path / "s.toml", "s", epochs=1, rounds=1, trials=3)
        study.write_text(study.read_text().replace('"digits"', f'"npz:{path}"'))
        study.write_text(study.read_text().replace("train_samples = 400\n", ""))
        db = tmp_path / "r.db"
        assert main(["run", str(study), "--storage", f"sqlite:///{db}", "--quiet"]) == 2
        _, err = capsys.readouterr()
        assert err.startswith("hpsearch: error: ") and err.count("\n") == 1, err
        assert path.name in err
        assert not marker.exists(), f"{path.name} was unpickled"
        assert not db.exists()


#: Calls that would run code from bytes a user controls.
_UNSAFE_CALLS = {
    "pickle.load",
    "pickle.loads",
    "cloudpickle.load",
    "cloudpickle.loads",
    "dill.load",
    "dill.loads",
    "joblib.load",
    "marshal.load",
    "marshal.loads",
    "shelve.open",
    "pd.read_pickle",
    "pandas.read_pickle",
    "yaml.load",
    "yaml.unsafe_load",
    "eval",
    "exec",
}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_packages_never_unpickle_or_eval():
    """Source scan of hpsearch/ and trainer/: no pickle/eval/exec; every np.load passes
    allow_pickle=False and every torch.load weights_only=True."""
    problems: list[str] = []
    np_loads = 0
    for package in (hpsearch, trainer):
        root = Path(package.__file__).parent
        for path in sorted(root.rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    names = [a.name for a in node.names]
                    module = getattr(node, "module", None) or ""
                    if "pickle" in names or module in ("pickle", "cloudpickle", "dill"):
                        problems.append(f"{path}:{node.lineno}: imports pickle")
                if not isinstance(node, ast.Call):
                    continue
                name = _dotted(node.func)
                where = f"{path.relative_to(root.parent)}:{node.lineno}"
                if name in _UNSAFE_CALLS:
                    problems.append(f"{where}: {name}(...)")
                if name in ("np.load", "numpy.load"):
                    np_loads += 1
                    flag = _keyword(node, "allow_pickle")
                    if not (isinstance(flag, ast.Constant) and flag.value is False):
                        problems.append(f"{where}: {name} without allow_pickle=False")
                if name == "torch.load":
                    flag = _keyword(node, "weights_only")
                    if not (isinstance(flag, ast.Constant) and flag.value is True):
                        problems.append(f"{where}: torch.load without weights_only=True")
    assert problems == []
    assert np_loads >= 1, "trainer.datasets reads .npz files with np.load"
