"""Optuna's and Ray's internals behind hpsearch.internals: the version check, the
public-API fallback (a real study end to end on it), and the rule that no other
module touches a private name."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import optuna
import pandas as pd
import pytest

from hpsearch import internals, records, results, space
from hpsearch.cli import main
from hpsearch.config import Choice, FloatRange, IntRange
from hpsearch.public_store import PublicStudyStore
from hpsearch.sampling import make_sampler, sample_params
from hpsearch.storage import StudyStore
from tests.hpsearch.studies_for_tests import small_study

HPSEARCH = Path(internals.__file__).parent


@pytest.fixture
def fresh_internals(monkeypatch):
    """As in a new process: nothing decided; decided again afterwards."""
    monkeypatch.delenv(internals.ENV_PUBLIC_ONLY, raising=False)
    internals.reset()
    yield monkeypatch
    monkeypatch.undo()
    internals.reset()


# -- the rule: private names only in hpsearch/internals.py ------------------------------

# In code (strings and comments removed): a private module or name of Optuna or Ray,
# or a private attribute of one of their objects (on anything but ``self``/``cls``).
PRIVATE_CODE = [
    re.compile(r"\b(optuna|ray)(\.\w+)*\._\w+"),  # optuna.storages._rdb, ray._private
    re.compile(r"\bfrom\s+(optuna|ray)[\w.]*\s+import\s+(\(\s*)?([\w\s,]*,\s*)?_\w+"),
    re.compile(
        r"(?<!\bself)(?<!\bcls)(?<!\bsuper\(\))\.(_study_id|_trial_id|_storage|_thread_local"
        r"|_multivariate|_get_trials|_cached_frozen_trial|_directions)\b"
    ),
    re.compile(r"\b(_create_scoped_session|_get_single_value|_filter_study|_internal_kv_\w+)\b"),
]
# In the raw text: a private attribute reached by name.
PRIVATE_GETATTR = re.compile(r"\b(getattr|hasattr)\([^,()]+,\s*[\"']_(?!_)\w+[\"']")


def _code(path: Path) -> str:
    """``path`` with its strings and comments blanked (docstrings may name private APIs)."""
    lines = [list(line) for line in path.read_text(encoding="utf-8").splitlines(keepends=True)]
    with path.open("rb") as f:
        for tok in tokenize.tokenize(f.readline):
            if tok.type not in (tokenize.STRING, tokenize.COMMENT):
                continue
            (row, col), (end_row, end_col) = tok.start, tok.end
            for r in range(row, end_row + 1):
                line = lines[r - 1]
                stop = end_col if r == end_row else len(line) - 1
                for c in range(col if r == row else 0, stop):
                    if line[c] != "\n":
                        line[c] = " "
    return "".join("".join(line) for line in lines)


def _private_uses(path: Path) -> list[str]:
    code = _code(path)
    found = [m.group(0) for pattern in PRIVATE_CODE for m in pattern.finditer(code)]
    own_attrs = {"self", "cls", "summary"}  # getattr(self, "_x") is the module's own business
    for m in PRIVATE_GETATTR.finditer(path.read_text(encoding="utf-8")):
        target = m.group(0).split("(", 1)[1].split(",", 1)[0].strip()
        if target not in own_attrs or path.name != "internals.py":
            found.append(m.group(0))
    return found


def test_only_internals_touches_private_optuna_and_ray_names():
    offenders = {
        str(p.relative_to(HPSEARCH.parent)): uses
        for p in sorted(HPSEARCH.rglob("*.py"))
        if p.name != "internals.py" and (uses := _private_uses(p))
    }
    assert offenders == {}


def test_the_rule_catches_each_kind_of_private_use(tmp_path):
    samples = {
        "from optuna.storages._rdb import models": True,
        "import ray._private.services": True,
        "from optuna.distributions import _get_single_value": True,
        "from optuna.distributions import (\n    json_to_distribution,\n    _get_single_value)": 1,
        "x = study._study_id": True,
        "study._thread_local.cached_all_trials = None": True,
        "trials = view._study._get_trials(deepcopy=False)": True,
        "s = getattr(study, '_study_id', None)": True,
        "self._storage = storage": False,
        "def _get_trials(self):\n    return super()._get_trials()": False,
        '"""Reads ``RDBStorage._get_trials``."""': False,
        "from optuna.distributions import json_to_distribution  # not _get_single_value": False,
    }
    got = {}
    for text in samples:
        path = tmp_path / "sample.py"
        path.write_text(text + "\n", encoding="utf-8")
        got[text] = bool(_private_uses(path))
    assert got == {text: bool(expected) for text, expected in samples.items()}


# -- the version check -----------------------------------------------------------------


def test_installed_versions_are_the_tested_ones():
    import ray

    assert internals._minor(optuna.__version__) in internals.TESTED_OPTUNA
    assert internals._minor(ray.__version__) in internals.TESTED_RAY


def test_the_dependency_bounds_admit_exactly_the_tested_releases():
    """pyproject.toml lets pip install only releases the fast paths were tested with."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((HPSEARCH.parent / "pyproject.toml").read_text(encoding="utf-8"))
    specs = {
        (req := Requirement(text)).name: req.specifier
        for text in project["project"]["dependencies"]
        if text.startswith(("optuna", "ray"))
    }
    for name, tested in (("optuna", internals.TESTED_OPTUNA), ("ray", internals.TESTED_RAY)):
        admitted = {
            minor
            for major in range(1, 8)
            for minor in (f"{major}.{n}" for n in range(100))
            if specs[name].contains(f"{minor}.0") or specs[name].contains(f"{minor}.9")
        }
        assert admitted == set(tested), name


def test_the_schema_revision_is_the_tested_one(tmp_path, fresh_internals):
    from hpsearch.storage_url import open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 'r.db'}", create=True)
    assert storage.get_current_version() in internals.TESTED_SCHEMA
    assert storage.get_head_version() in internals.TESTED_SCHEMA
    assert internals.optuna_fast()


UNTESTED_LINE = (
    "Optuna 5.9.0 is not a version hpsearch was tested with (5.1); its fast paths are off, "
    "using Optuna's public API (slower, same results)"
)


def test_an_untested_optuna_warns_once_and_uses_the_public_api(
    tmp_path, fresh_internals, caplog, ray_local
):
    fresh_internals.setattr(optuna, "__version__", "5.9.0")
    study = small_study(tmp_path / "s.toml", "untested", epochs=1, rounds=1, trials=3, workers=1)
    url = f"sqlite:///{tmp_path / 'u.db'}"
    # Several storage opens, a sampler and the reads of show in one process: one line.
    with caplog.at_level(logging.WARNING):
        assert main(["run", str(study), "--storage", url, "--quiet"]) == 0
        assert main(["show", "untested", "--storage", url]) == 0
    assert [r.getMessage() for r in caplog.records if "tested with" in r.getMessage()] == [
        UNTESTED_LINE
    ]
    assert not internals.optuna_fast()
    recorded = optuna.load_study(study_name="untested", storage=url).trials
    assert [t.state.name for t in recorded] == ["COMPLETE"] * 3
    assert [t.user_attrs[records.TRIAL_ROUND] for t in recorded] == [0, 0, 0]  # 0-based

    # As a user sees it: one line on stderr, then what show prints.
    code = (
        "import sys, optuna; optuna.__version__ = '5.9.0'; from hpsearch.cli import main; "
        f"sys.exit(main(['show', 'untested', '--storage', {url!r}]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [f"hpsearch: WARNING: {UNTESTED_LINE}"]
    assert "untested" in done.stdout


def test_a_database_at_another_schema_revision_turns_the_fast_paths_off(
    tmp_path, fresh_internals, caplog
):
    fresh_internals.setattr(internals, "TESTED_SCHEMA", ("v9.9.9.z",))
    from hpsearch.storage_url import open_storage

    with caplog.at_level(logging.WARNING, logger="hpsearch.internals"):
        open_storage(f"sqlite:///{tmp_path / 'r.db'}", create=True)
        open_storage(f"sqlite:///{tmp_path / 'r.db'}", create=False)
    assert [r.getMessage() for r in caplog.records] == [
        "the database's Optuna schema revision v3.2.0.a is not one hpsearch was "
        "tested with (v9.9.9.z); its fast paths are off, using Optuna's public API (slower, "
        "same results)"
    ]
    assert not internals.optuna_fast()


def test_an_untested_ray_turns_its_private_calls_off(fresh_internals, caplog):
    import ray

    fresh_internals.setattr(ray, "__version__", "2.99.0")
    with caplog.at_level(logging.WARNING, logger="hpsearch.internals"):
        assert internals.ray_auto_address() is None
        assert internals.ray_local_ip("127.0.0.1") == "127.0.0.1"
        assert internals.ray_cluster_config() is None
        assert internals.ray_v1_status() is None
    assert len(caplog.records) == 1
    assert "Ray 2.99.0 is not a version hpsearch was tested with (2.60)" in caplog.text


def test_the_environment_variable_forces_the_public_api_silently(fresh_internals, caplog):
    fresh_internals.setenv(internals.ENV_PUBLIC_ONLY, "1")
    with caplog.at_level(logging.WARNING):
        assert not internals.optuna_fast()
        assert not internals.ray_fast()
    assert caplog.records == []


# -- the fallback gives what the fast path gives -----------------------------------------


def test_the_sampler_draws_the_same_on_both_paths(fresh_internals):
    """TPE reads the study through Study._get_trials (fast) or get_trials (public)."""
    box = {
        "lr": FloatRange(low=1e-4, high=1.0, log=True),
        "depth": IntRange(low=1, high=4),
        "act": Choice(choices=("relu",)),
    }
    dists = space.distributions(box)

    def draws() -> list[dict]:
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        study = optuna.create_study(direction="maximize")
        sampler = make_sampler("tpe", seed=3)
        out = []
        for i in range(14):
            params = sample_params(sampler, study, box)
            out.append(params)
            study.add_trial(
                optuna.trial.create_trial(params=params, distributions=dists, value=-abs(i - 7))
            )
        return out

    fast = draws()
    assert internals.optuna_fast()
    fresh_internals.setenv(internals.ENV_PUBLIC_ONLY, "1")
    internals.reset()
    public = draws()
    assert not internals.optuna_fast()
    assert public == fast
    assert all(p["act"] == "relu" for p in public)


def _store_story(tmp_path: Path, label: str) -> dict:
    """One store's answers to a fixed sequence of writes and reads (same on both paths)."""
    from hpsearch.records import RoundRecord
    from hpsearch.worker import TrialOutcome

    store, existed = StudyStore.open(
        f"sqlite:///{tmp_path / (label + '.db')}",
        "story",
        direction="maximize",
        sampler=make_sampler("random", 0),
        create=True,
    )
    dists = space.distributions({"lr": FloatRange(low=1e-3, high=1.0, log=True)})
    batch = [({"lr": 0.01 * (i + 1)}, 0) for i in range(5)]
    created = store.create_running_trials(batch, dists, round_limit=4, driver="d1")
    epochs = [dict.fromkeys(records.CURVE_FIELDS, 0.25), dict.fromkeys(records.CURVE_FIELDS, 0.5)]
    history = {"records": epochs}
    outcomes = [
        TrialOutcome(
            number=n,
            trial_id=t,
            round=0,
            seed=n,
            params={},
            state="COMPLETE",
            value=0.5 + n / 10,
            history=history,
            node="n",
            backend="numpy",
        )
        for t, n in created[:2]
    ]
    store.finish_trials(outcomes)
    store.finish_trials(outcomes[:1])  # already finished: left as is
    running = store.trials(states=[optuna.trial.TrialState.RUNNING])
    failed = [store.fail_trial(store.trial_id(t), "stale: left RUNNING") for t in running[:1]]
    failed.append(store.fail_trial(created[0][0], "stale: again"))  # finished: False
    first = RoundRecord(index=0, box={}, n_trials=4)
    started = [
        store.start_first_round(first),
        store.start_first_round(RoundRecord(index=0, box={}, n_trials=9)),
    ]
    ended = RoundRecord(index=0, box={}, n_trials=4, ended_at="2026-01-01T00:00:00")
    closed = [
        store.close_round(ended, None, {"state": "finished"})[1],
        store.close_round(ended, None, {"state": "finished"})[1],
    ]
    trials = store.trials()
    return {
        "public": isinstance(store, PublicStudyStore),
        "existed": existed,
        "created": [n for _, n in created],
        "count_round": store.count_round(0),
        "failed": failed,
        "started": [r.n_trials for r in started],
        "closed": closed,
        "rounds": [r.to_dict() for r in store.rounds()],
        "trials": [
            (
                t.number,
                t.state.name,
                t.value,
                t.params,
                t.intermediate_values,
                {k: v for k, v in t.user_attrs.items() if k != records.TRIAL_TRAIN_SECONDS},
            )
            for t in trials
        ],
    }


def test_the_public_store_answers_as_the_fast_one(tmp_path, fresh_internals):
    fast = _store_story(tmp_path, "fast")
    fresh_internals.setenv(internals.ENV_PUBLIC_ONLY, "1")
    internals.reset()
    public = _store_story(tmp_path, "public")
    assert (fast.pop("public"), public.pop("public")) == (False, True)
    assert public == fast
    assert fast["created"] == [0, 1, 2, 3]  # the round limit cut the batch of 5
    assert fast["failed"] == [True, False]
    assert fast["count_round"] == 3  # the stale FAIL does not count
    assert fast["closed"] == [True, False]


MASKED = [
    "datetime_start",
    "datetime_complete",
    "duration",
    "duration_s",
    "train_seconds",
    "started_at",
    "ended_at",
]


def _without_times(frame: pd.DataFrame) -> pd.DataFrame:
    drop = [c for c in frame.columns if c in MASKED or "time" in c or "seconds" in c]
    return frame.drop(columns=drop).reset_index(drop=True)


@pytest.fixture(scope="module")
def both_paths(tmp_path_factory, ray_local):
    """The same study run on the fast path and, in another database, on the public one;
    each read back on the path it was written with."""
    root = tmp_path_factory.mktemp("paths")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        for path in ("fast", "public"):
            if path == "public":
                mp.setenv(internals.ENV_PUBLIC_ONLY, "1")
            internals.reset()
            study = small_study(root / f"{path}.toml", "paths", epochs=2, rounds=2, trials=6)
            url = f"sqlite:///{root / (path + '.db')}"
            assert main(["run", str(study), "--storage", url, "--quiet"]) == 0
            store, _ = StudyStore.open(
                url, "paths", direction="maximize", sampler=make_sampler("random", 0), create=False
            )
            assert isinstance(store, PublicStudyStore) == (path == "public")
            report_dir = root / f"{path}_report"
            assert main(["report", "paths", "--storage", url, "-o", str(report_dir)]) == 0
            out[path] = {
                "fast_paths": internals.optuna_fast(),
                "studies": results.studies(url),
                "trials": results.trials(url, "paths"),
                "rounds": results.rounds(url, "paths"),
                "curves": results.curves(url, "paths"),
                "report": report_dir,
            }
    internals.reset()
    return out


def test_the_public_path_was_taken(both_paths):
    assert both_paths["fast"]["fast_paths"] is True
    assert both_paths["public"]["fast_paths"] is False


@pytest.mark.parametrize("table", ["trials", "rounds", "curves"])
def test_the_public_path_records_what_the_fast_path_records(both_paths, table):
    fast = _without_times(both_paths["fast"][table])
    public = _without_times(both_paths["public"][table])
    assert len(fast) > 0
    pd.testing.assert_frame_equal(public, fast)


def test_the_counts_are_equal_on_both_paths(both_paths):
    fast = _without_times(both_paths["fast"]["studies"])
    public = _without_times(both_paths["public"]["studies"])
    pd.testing.assert_frame_equal(public, fast)
    assert int(fast.loc[0, "n_complete"]) == 12


def _report_text(directory: Path) -> str:
    text = (directory / "index.html").read_text(encoding="utf-8")
    text = re.sub(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d(:\d\d(\.\d+)?)?(\+00:00| UTC)?", "<time>", text)
    text = re.sub(r"<td>\d+\.\d\d</td>", "<td><wall></td>", text)  # a round's wall seconds
    return re.sub(r"\b\d+(\.\d+)? ?(s|min|h|seconds)\b", "<duration>", text)


def test_the_report_says_the_same_on_both_paths(both_paths):
    fast = both_paths["fast"]["report"]
    public = both_paths["public"]["report"]
    assert sorted(p.name for p in public.iterdir()) == sorted(p.name for p in fast.iterdir())
    assert _report_text(public).replace("public", "fast") == _report_text(fast)


def test_a_storage_other_than_rdb_keeps_working(fresh_internals):
    """results reads any BaseStorage through the public API."""
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="mem", direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    assert len(results.trials(storage, "mem")) == 3
