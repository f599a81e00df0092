"""Trial packing through the driver: packed trials record what they would alone."""

from __future__ import annotations

import pytest

from hpsearch import results
from hpsearch.cli import main
from hpsearch.cluster import AUTO_PACK_SIZE, effective_pack_size
from hpsearch.config import parse_study
from tests.hpsearch.studies_for_tests import small_study

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _with_pack_size(path, size: int):
    text = path.read_text().replace("[resources]\n", f"[resources]\npack_size = {size}\n")
    path.write_text(text)
    return path


def test_packed_and_unpacked_runs_record_the_same_trials(tmp_path, ray_local, capsys):
    alone = _with_pack_size(small_study(tmp_path / "a.toml", "alone", rounds=2, trials=8), 1)
    packed = _with_pack_size(small_study(tmp_path / "p.toml", "packed", rounds=2, trials=8), 4)
    url = f"sqlite:///{tmp_path / 'pack.db'}"
    assert main(["run", str(alone), "--storage", url, "--quiet"]) == 0
    assert main(["run", str(packed), "--storage", url, "--quiet"]) == 0
    assert "packing up to 4 trials" in capsys.readouterr().err
    a = results.trials(url, "alone").set_index("number")
    p = results.trials(url, "packed").set_index("number")
    assert len(a) == len(p) == 16
    for column in ("lr", "weight_decay", "dropout_ratio", "seed", "round", "state"):
        assert (a[column] == p[column]).all(), column
    assert a["value"].to_numpy() == pytest.approx(p["value"].to_numpy(), rel=1e-5)
    ca = results.curves(url, "alone")
    cp = results.curves(url, "packed")
    assert ca["accuracy"].to_numpy() == pytest.approx(cp["accuracy"].to_numpy(), rel=1e-5)


def test_auto_packing_packs_small_networks_only():
    small = parse_study(
        "[study]\nname='s'\n[data]\ndataset='digits'\n[model]\nhidden_sizes=[50, 50]\n"
        "batch_size=50\n[search.lr]\nlow=0.01\nhigh=0.1\nlog=true\n"
    )
    big = parse_study(
        "[study]\nname='b'\n[data]\ndataset='mnist5k'\n[model]\nhidden_sizes=[100, 100, 100, "
        "100, 100, 100]\nbatch_size=100\n[search.lr]\nlow=0.01\nhigh=0.1\nlog=true\n"
    )
    assert effective_pack_size(small, 64, 10) == AUTO_PACK_SIZE
    assert effective_pack_size(big, 784, 10) == 1
    off = parse_study(small.source_text + "[resources]\npack_size = 1\n")
    assert effective_pack_size(off, 64, 10) == 1


def test_short_unpacked_trials_are_chained_and_record_what_they_would_alone(
    tmp_path, ray_local, monkeypatch
):
    """Once the driver sees trials are short, it sends several per actor call
    (run one after another); every trial still records exactly what it would
    with one call per trial."""
    from hpsearch import search
    from hpsearch.cluster import RayExecutor
    from hpsearch.config import load_study
    from hpsearch.runner import run_study

    calls: list[tuple[int, bool]] = []
    call = RayExecutor._call

    def spy(self, tasks, *, stacked):
        calls.append((len(tasks), stacked))
        return call(self, tasks, stacked=stacked)

    monkeypatch.setattr(RayExecutor, "_call", spy)
    url = f"sqlite:///{tmp_path / 'chain.db'}"
    runs = {}
    for name, short in (("chained", search.SHORT_TRIAL), ("one_per_call", 0.0)):
        monkeypatch.setattr(search, "SHORT_TRIAL", short)
        path = _with_pack_size(small_study(tmp_path / f"{name}.toml", name, rounds=2, trials=12), 1)
        calls.clear()
        run_study(load_study(path), url, final_eval=False)
        runs[name] = list(calls)
    assert all(n == 1 for n, _ in runs["one_per_call"])
    chains = [n for n, stacked in runs["chained"] if n > 1]
    assert chains and not any(stacked for n, stacked in runs["chained"] if n > 1)
    assert max(chains) <= search.CHAIN_SIZE
    assert sum(n for n, _ in runs["chained"]) == 24
    a = results.trials(url, "chained").set_index("number")
    b = results.trials(url, "one_per_call").set_index("number")
    assert len(a) == len(b) == 24
    for column in ("lr", "weight_decay", "dropout_ratio", "seed", "round", "state"):
        assert (a[column] == b[column]).all(), column
    assert a["value"].to_numpy() == pytest.approx(b["value"].to_numpy(), rel=1e-6)
