"""hpsearch ls | show | trials | export: data on stdout, one-line errors, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pandas.testing import assert_frame_equal

from hpsearch import results
from hpsearch.cli import main
from hpsearch.storage_url import close_storage, open_storage
from tests.hpsearch.fake_study import FakeStudy, write_fake_study

REPO = Path(__file__).resolve().parents[2]
RAY_NODE_ID = "d13f71844785d832f3699bd8898afd7c61aaf326b1ec84190c835a98"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[str, FakeStudy, FakeStudy]:
    db = tmp_path_factory.mktemp("cli") / "results.db"
    url = f"sqlite:///{db}"
    up = write_fake_study(url, "up")
    down = write_fake_study(
        url,
        "down",
        direction="minimize",
        rounds=2,
        seed=4,
        final_eval=False,
        running=1,
        node=RAY_NODE_ID,
    )
    return url, up, down


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _rows(out: str) -> list[list[str]]:
    """The data rows of a plain text table (header dropped), split on whitespace."""
    lines = [line.split() for line in out.strip().splitlines()]
    return lines[1:]


def test_ls_lists_every_study_with_counts(recorded, capsys):
    url, up, down = recorded
    code, out, err = _run(capsys, "ls", "--storage", url)
    assert code == 0 and err == ""
    header = out.splitlines()[0].split()
    assert header[:9] == [
        "study",
        "direction",
        "metric",
        "n_trials",
        "n_complete",
        "n_pruned",
        "n_fail",
        "n_rounds",
        "best_value",
    ]
    rows = {r[0]: r for r in _rows(out)}
    assert set(rows) == {"up", "down"}
    assert rows["up"][1:8] == ["maximize", "val_accuracy", "18", "13", "3", "2", "3"]
    assert rows["up"][8] == f"{up.best.value:.4f}"
    assert rows["down"][1] == "minimize" and rows["down"][3] == str(len(down.trials))


def test_ls_defaults_to_hpsearch_db_in_the_current_directory(
    recorded, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(capsys, "ls")
    assert code == 2 and out == ""
    assert "hpsearch.db" in err and "does not exist" in err
    assert not (tmp_path / "hpsearch.db").exists()


def test_ls_of_an_empty_database_prints_no_data(capsys, tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    close_storage(open_storage(url, create=True))
    code, out, err = _run(capsys, "ls", "--storage", url)
    assert code == 0 and out == ""
    assert "no studies" in err


def test_show_prints_rounds_best_trial_and_final_evaluation(recorded, capsys):
    url, up, _ = recorded
    code, out, err = _run(capsys, "show", "up", "--storage", url)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith("study: up  (maximize val_accuracy; 18 trials: 13 complete")
    assert "status: finished" in out
    header = next(line for line in lines if line.split()[:3] == ["round", "trials", "best"])
    for column in ("median", "wall_s", "lr", "weight_decay", "dropout_ratio", "batchnorm"):
        assert column in header.split()
    start = lines.index(header)
    table = [line.split() for line in lines[start + 1 : start + 4]]
    assert [r[0] for r in table] == ["1", "2", "3"]  # numbered from 1, as hpsearch run does
    assert [r[2] for r in table] == [f"{rec.best:.4f}" for rec in up.rounds]
    assert "1e-06..0.01" in lines[start + 1]  # round 1's box is the study file's
    best = up.best
    assert (
        f"best: trial {best.number}, round {best.round + 1}  val_accuracy={best.value:.4f}" in out
    )
    for name in ("lr", "weight_decay", "dropout_ratio", "batchnorm", "batch_size", "activation"):
        assert any(line.split()[:1] == [name] for line in lines), name
    assert "final evaluation: test accuracy 0.9200 ± 0.0100 over 3 seeds" in out


def test_show_without_final_evaluation_or_finish(recorded, capsys):
    url, _, down = recorded
    code, out, _ = _run(capsys, "show", "down", "--storage", url)
    assert code == 0
    assert "final evaluation" not in out and "status:" not in out
    assert "1 running" in out
    assert f"best: trial {down.best.number}" in out and "val_loss=" in out


def test_trials_sorted_by_value_best_first_with_limit(recorded, capsys):
    url, up, down = recorded
    code, out, err = _run(
        capsys, "trials", "up", "--storage", url, "--sort", "value", "--limit", "3"
    )
    assert code == 0 and err == ""
    rows = _rows(out)
    assert len(rows) == 3
    assert rows[0][0] == str(up.best.number)
    values = [float(r[2]) for r in rows]
    assert values == sorted(values, reverse=True)
    code, out, _ = _run(
        capsys, "trials", "down", "--storage", url, "--sort", "value", "--limit", "1"
    )
    assert _rows(out)[0][0] == str(down.best.number)  # minimize: the lowest first


def test_trials_filtered_by_state(recorded, capsys):
    url, up, _ = recorded
    code, out, _ = _run(capsys, "trials", "up", "--storage", url, "--state", "fail")
    assert code == 0
    rows = _rows(out)
    assert [int(r[0]) for r in rows] == up.numbers("FAIL")
    assert all(r[1] == "FAIL" for r in rows)
    assert "diverged" in out and "worker died" in out
    code, out, _ = _run(
        capsys, "trials", "up", "--storage", url, "--state", "PRUNED", "--state", "FAIL"
    )
    assert len(_rows(out)) == len(up.numbers("PRUNED")) + len(up.numbers("FAIL"))


def test_trials_default_and_chosen_columns(recorded, capsys):
    url, up, _ = recorded
    _, out, _ = _run(capsys, "trials", "up", "--storage", url)
    header = out.splitlines()[0].split()
    assert header[:6] == ["number", "state", "value", "round", "seed", "lr"]
    assert "fail_reason" in header and "duration" in header
    assert len(_rows(out)) == len(up.trials)
    _, out, _ = _run(capsys, "trials", "up", "--storage", url, "--columns", "number,batchnorm")
    assert out.splitlines()[0].split() == ["number", "batchnorm"]
    assert {r[1] for r in _rows(out)} <= {"True", "False"}


def test_trials_shorten_ray_node_ids_unless_asked_for(recorded, capsys):
    url, _, _ = recorded
    _, out, _ = _run(capsys, "trials", "down", "--storage", url, "--state", "COMPLETE")
    header = out.splitlines()[0].split()
    nodes = {r[header.index("node")] for r in _rows(out)}
    assert nodes == {RAY_NODE_ID[:12]}
    _, out, _ = _run(capsys, "trials", "down", "--storage", url, "--columns", "number,node")
    assert RAY_NODE_ID in out


@pytest.mark.parametrize(
    "argv, words",
    [
        (["trials", "up", "--sort", "bogus"], "--sort: got 'bogus'; allowed columns: number"),
        (["trials", "up", "--columns", "number,nope"], "--columns: got 'number,nope'"),
    ],
)
def test_bad_trials_options_are_one_line_errors(recorded, capsys, argv, words):
    url, _, _ = recorded
    code, out, err = _run(capsys, *argv, "--storage", url)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("hpsearch: error: ")
    assert words in err


def test_bad_limit_and_state_are_usage_errors(recorded, capsys):
    url, _, _ = recorded
    for argv in (["--limit", "0"], ["--limit", "x"], ["--state", "DONE"]):
        with pytest.raises(SystemExit) as info:
            main(["trials", "up", "--storage", url, *argv])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.strip().startswith("hpsearch: error:") and err.count("\n") == 1


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_export_writes_a_file_that_round_trips(recorded, capsys, tmp_path, fmt):
    url, _, _ = recorded
    path = tmp_path / f"up.{fmt}"
    code, out, err = _run(
        capsys, "export", "up", "--storage", url, "--format", fmt, "-o", str(path)
    )
    assert code == 0 and out == ""
    assert str(path) in err
    assert_frame_equal(results.read_export(path, fmt), results.trials(url, "up"))


def test_export_curves_and_rounds_tables(recorded, capsys, tmp_path):
    url, _, _ = recorded
    for table in ("curves", "rounds"):
        path = tmp_path / f"{table}.parquet"
        code, _, _ = _run(
            capsys, "export", "up", "--storage", url, "--table", table, "-o", str(path)
        )
        assert code == 0
        expected = getattr(results, table)(url, "up")
        assert_frame_equal(results.read_export(path, table=table), expected)


def test_parquet_without_pyarrow_names_the_extra_and_writes_nothing(recorded, tmp_path):
    # A plain install (no dev extra) has no pyarrow: simulate it before pandas is imported.
    url, _, _ = recorded
    out = tmp_path / "up.parquet"
    code = (
        "import sys\n"
        "sys.modules['pyarrow'] = None\n"
        "from hpsearch.cli import main\n"
        "from hpsearch import results\n"
        f"code = main(['export', 'up', '--storage', {url!r}, '-o', {str(out)!r}])\n"
        "try:\n"
        f"    results.read_export({str(out)!r})\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
        "sys.exit(code)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert run.returncode == 2, run.stderr
    assert run.stderr == (
        "hpsearch: error: export format parquet: needs pyarrow, which is not installed; "
        "install the parquet extra: pip install 'hpsearch[parquet]' (or use csv or json)\n"
    )
    assert run.stdout.startswith("HPSearchError read_export format parquet: needs pyarrow")
    assert not out.exists()


@pytest.mark.parametrize("command", ["show", "trials", "export"])
def test_missing_study_is_one_line_and_exit_2(recorded, capsys, tmp_path, command):
    url, _, _ = recorded
    extra = ["-o", str(tmp_path / "x.csv")] if command == "export" else []
    code, out, err = _run(capsys, command, "nope", "--storage", url, *extra)
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert err.startswith("hpsearch: error: study 'nope' not found in sqlite:///")
    assert "existing studies: up, down" in err
    assert list(tmp_path.iterdir()) == []


def test_bad_storage_url_is_masked_one_line_and_exit_2(capsys):
    code, out, err = _run(capsys, "ls", "--storage", "postgres://me:hunter2@db.example/hp")
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert "hunter2" not in err and "postgres://me:***@db.example/hp" in err
    assert "postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE" in err


def test_missing_sqlite_file_is_exit_2_and_not_created(capsys, tmp_path):
    db = tmp_path / "missing.db"
    for argv in (["ls"], ["show", "x"], ["trials", "x"]):
        code, out, err = _run(capsys, *argv, "--storage", f"sqlite:///{db}")
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and "does not exist" in err
    assert not db.exists()
