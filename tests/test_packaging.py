"""Packaging: the wheel holds every package and the example study files; studies and init.

``pyproject.toml`` lists the packages (the repository's ``studies/`` folder is
installed as ``hpsearch.studies``), so a package added to the source tree must
be added there: the first test says which one is missing. The wheel is built
from this checkout with ``pip wheel --no-deps --no-build-isolation`` (the
venv's setuptools, no download) and installed with ``pip install --no-deps
--target`` into a directory that is put first on ``PYTHONPATH``, so the
commands run from the wheel's files with this venv's dependencies.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from hpsearch.cli import main
from hpsearch.cli.studies import bundled, summary
from hpsearch.config import load_study

REPO = Path(__file__).resolve().parents[1]
STUDIES = sorted(p.stem for p in (REPO / "studies").glob("*.toml"))


def _packages() -> list[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return config["tool"]["setuptools"]["packages"]


def test_every_package_of_the_source_tree_is_listed_in_pyproject():
    found = {
        ".".join(init.parent.relative_to(REPO).parts)
        for top in ("hpsearch", "trainer")
        for init in (REPO / top).rglob("__init__.py")
    }
    assert found | {"hpsearch.studies"} == set(_packages())


def test_the_studies_folder_is_the_hpsearch_studies_package():
    assert STUDIES == ["mnist_ch6", "overfit", "quick"]
    files = bundled()
    assert list(files) == STUDIES
    for name, entry in files.items():
        assert entry.read_bytes() == (REPO / "studies" / f"{name}.toml").read_bytes()


# --- hpsearch studies / init -------------------------------------------------------------


def test_studies_lists_every_shipped_study(capsys):
    assert main(["studies"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["name", "data", "rounds", "epochs", "sampler", "pruner", "about"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert list(rows) == STUDIES
    assert "mnist5k (500) 3 x 33     50     tpe   asha" in rows["mnist_ch6"]
    assert rows["quick"].endswith("a smoke-test-sized search on scikit-learn's bundled 8x8 digits.")
    assert err == "hpsearch: copy one with: hpsearch init NAME [DIR]\n"


def test_summary_is_the_first_comment_line_without_the_name():
    assert summary("# quick: a small search.\n#\n[study]\n") == "a small search."
    assert summary("\n# just words: with a colon\n") == "just words: with a colon"
    assert summary("[study]\nname = 'x'\n") == ""


def test_init_copies_the_study_into_the_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["init", "quick"]) == 0
    out, err = capsys.readouterr()
    assert out == "quick.toml\n"
    assert "run it with: hpsearch run quick.toml" in err
    assert (tmp_path / "quick.toml").read_bytes() == (REPO / "studies" / "quick.toml").read_bytes()
    assert load_study(tmp_path / "quick.toml").name == "quick"

    assert main(["init", "mnist_ch6.toml", "runs/ch6"]) == 0  # a DIR, created; NAME.toml too
    assert capsys.readouterr().out == f"{Path('runs/ch6/mnist_ch6.toml')}\n"
    assert (tmp_path / "runs" / "ch6" / "mnist_ch6.toml").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["init", "quick"], "init: quick.toml exists; remove it or give another DIR"),
        (["init", "nope"], "init NAME: got 'nope'; shipped studies: mnist_ch6, overfit, quick"),
        (["init", "overfit", "a_file"], "init DIR: got 'a_file', a file; expected a directory"),
    ],
)
def test_init_errors_are_one_line_exit_2_and_write_nothing(
    tmp_path, capsys, monkeypatch, argv, message
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quick.toml").write_text("# mine\n", encoding="utf-8")
    (tmp_path / "a_file").write_text("", encoding="utf-8")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"hpsearch: error: {message}") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "quick.toml").read_text(encoding="utf-8") == "# mine\n"


# --- the wheel ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=out,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    (path,) = out.glob("hpsearch-*.whl")
    return path


@pytest.mark.slow
def test_wheel_holds_the_study_files_and_every_module(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for name in STUDIES:
            shipped = archive.read(f"hpsearch/studies/{name}.toml")
            assert shipped == (REPO / "studies" / f"{name}.toml").read_bytes()
    sources = {
        p.relative_to(REPO).as_posix()
        for top in ("hpsearch", "trainer")
        for p in (REPO / top).rglob("*.py")
    }
    assert sources <= names, sorted(sources - names)
    assert "hpsearch/studies/__init__.py" in names


@pytest.mark.slow
@pytest.mark.ray
def test_studies_init_and_run_from_the_installed_wheel(wheel, tmp_path, ray_local):
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
         str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")

    def hpsearch(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hpsearch", *args],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=work,
            env=env,
        )

    where = subprocess.run(
        [sys.executable, "-c", "import hpsearch.cli.studies as m; print(m.__file__)"],
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
    )
    assert Path(where.stdout.strip()).is_relative_to(site)  # the wheel's files, not the checkout

    listed = hpsearch("studies")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == STUDIES

    copied = hpsearch("init", "quick")
    assert copied.returncode == 0, copied.stderr
    assert (work / "quick.toml").read_bytes() == (REPO / "studies" / "quick.toml").read_bytes()

    address = ray_local.get_runtime_context().gcs_address
    url = f"sqlite:///{work / 'hpsearch.db'}"
    ran = hpsearch(
        "run", "quick.toml", "--storage", url, "--address", address, "--quiet",
        "--rounds", "1", "--trials-per-round", "3",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    shown = hpsearch("trials", "quick", "--storage", url, "--state", "COMPLETE")
    assert shown.returncode == 0, shown.stderr
    assert len(shown.stdout.splitlines()) == 1 + 3  # header + the three trials
