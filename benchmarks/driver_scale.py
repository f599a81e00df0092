"""The driver's ceiling as a study grows: trials/min with near-zero trial work (not a test).

Trials run on :class:`hpsearch.fake_cluster.FakeExecutor`, which finishes each
trial after ``--delay`` seconds (default 0) without training: every figure
below is the driver's own work (sampling, writing trials, recording results,
round rule) and stands in for a cluster of any size. Each configuration
(sampler x pruner x database) runs a fresh study of ``--trials`` trials in its
own process (so its memory is its own) and reports, per segment of the study:

* trials/min (the driver's ceiling) and driver CPU ms per trial (the
  driver's process only; with a pruner the pruning oracle runs inside the
  driver here, an actor on a cluster);
* for PostgreSQL, the server's CPU ms per trial too: its client backends for
  the study's database (the driver's connections), read from /proc, so only
  for a server on this machine (its WAL writer, checkpointer and autovacuum
  are not counted);
* driver RSS and database size as the study grows;
* workers kept busy at that ceiling: ceiling x T / 60 for trials of T = 1, 10
  and 60 seconds (from the last segment's rate);
* the ratio of the last third's rate (the last 10,000 of 30,000) to the first
  thirtieth's (the first 1,000).

``--proposer optuna`` runs the learning samplers through Optuna's own
per-trial sampling (``hpsearch.sampling.sample_params``: one refit on every
finished trial per ask) instead of the batched proposer
(:mod:`hpsearch.proposer`), for a side-by-side in the same script.

    python benchmarks/driver_scale.py                                 # 30,000 trials, tpe on SQLite
    python benchmarks/driver_scale.py --samplers random,tpe,qmc --pruners none,asha \\
        --databases sqlite,postgres --trials 10000
    python benchmarks/driver_scale.py --smoke                          # a few hundred trials
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

POSTGRES_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

STUDY = """
[study]
name = "driver_scale"
seed = 0
sampler = "{sampler}"
pruner = "{pruner}"

[data]
dataset = "synthetic:200"

[model]
hidden_sizes = [4]
epochs = {epochs}

[search.lr]
low = 1e-6
high = 1e-1
log = true

[search.weight_decay]
low = 1e-8
high = 1e-3
log = true

[search.dropout_ratio]
low = 0.0
high = 0.5

[search.batchnorm]
choices = [true, false]

[narrowing]
rounds = {rounds}
trials_per_round = {per_round}
top_k = 25
margin = 0.1

[final_eval]
enabled = false
"""

T_SECONDS = (1, 10, 60)


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _server_cpu(pids: list[int]) -> float | None:
    """CPU seconds used so far by processes ``pids`` (utime + stime, from /proc);
    None when this machine does not show one of them (a remote server)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _pg_database() -> tuple[str, str]:
    import sqlalchemy

    name = f"driver_scale_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return name, POSTGRES_ADMIN.rsplit("/", 1)[0] + "/" + name


def _pg_drop(name: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """One study in this process; its checkpoints as a dict (printed as JSON)."""
    import optuna

    from hpsearch.config import parse_study
    from hpsearch.fake_cluster import FakeExecutor
    from hpsearch.sampling import make_sampler
    from hpsearch.search import NarrowingSearch, SearchObserver
    from hpsearch.storage import StudyStore

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    n = args.trials
    rounds = args.rounds
    per_round = -(-n // rounds)
    epochs = 4 if args.pruner != "none" else 1
    config = parse_study(
        STUDY.format(
            sampler=args.sampler,
            pruner=args.pruner,
            epochs=epochs,
            rounds=rounds,
            per_round=per_round,
        )
    )
    tmp = tempfile.mkdtemp(prefix="driver_scale_")
    pg_name = None
    if args.database == "postgres":
        pg_name, url = _pg_database()
    else:
        url = f"sqlite:///{tmp}/scale.db"

    def db_mb() -> tuple[float, float | None]:
        """The database's size, and (PostgreSQL) its client backends' CPU seconds."""
        if pg_name is None:
            return sum(p.stat().st_size for p in Path(tmp).glob("scale.db*")) / 2**20, None
        with store.rdb.engine.connect() as conn:
            size = conn.exec_driver_sql(f"SELECT pg_database_size('{pg_name}')").scalar_one()
            pids = conn.exec_driver_sql(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend'"
            ).scalars()
            return size / 2**20, _server_cpu(list(pids))

    every = max(1, n // args.checkpoints)
    # Checkpoints every n/checkpoints trials and at every segment's ends.
    targets = sorted({*range(every, n + 1, every), *(b for _, b in segments(n))})
    marks: list[dict[str, float]] = []

    class Clock(SearchObserver):
        def __init__(self) -> None:
            self.before = 0  # trials of the rounds already closed
            self.next = 0  # index into targets

        def round_finished(self, record: Any) -> None:
            self.before += record.n_trials

        def trials_finished(self, round_index, done, total, running, best) -> None:
            count = self.before + done
            if self.next < len(targets) and count >= targets[self.next]:
                marks.append(_mark(count))
                while self.next < len(targets) and targets[self.next] <= count:
                    self.next += 1

    def _mark(count: int) -> dict[str, float]:
        size, server = db_mb()
        return {
            "trials": count,
            "wall": time.perf_counter(),
            "cpu": time.process_time(),
            "rss_mb": _rss_mb(),
            "db_mb": size,
            "load": os.getloadavg()[0],
            "server_cpu": server,
        }

    sampler = make_sampler(config.sampler, config.seed)
    store, _ = StudyStore.open(
        url, config.name, direction=config.direction, sampler=sampler, create=True
    )
    executor = FakeExecutor(
        workers=args.workers,
        delay=args.delay,
        epochs=epochs,
        pruner=config.pruner,
        direction=config.direction,
    )
    marks.append(_mark(0))
    search = NarrowingSearch(
        config,
        store,
        executor,
        sampler,
        observer=Clock(),
        final_eval=False,
        batched=args.proposer == "batched",
    )
    search.run()
    if marks[-1]["trials"] < executor.submitted:  # the last trials after the last checkpoint
        marks.append(_mark(executor.submitted))
    states: dict[str, int] = {}
    for trial in store.trials():
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
    store.rdb.engine.dispose()
    if pg_name is not None:
        _pg_drop(pg_name)
    shutil.rmtree(tmp, ignore_errors=True)  # a 30,000-trial SQLite study is ~50 MB
    return {
        "config": {
            "sampler": args.sampler,
            "pruner": args.pruner,
            "database": args.database,
            "proposer": args.proposer,
            "trials": n,
            "rounds": rounds,
            "workers": args.workers,
            "delay": args.delay,
        },
        "marks": marks,
        "states": states,
        "load": sum(m["load"] for m in marks) / len(marks),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def segments(n: int) -> list[tuple[int, int]]:
    """Segments of a study of ``n`` trials: at 30,000, 0-1k, 1k-2k, 2k-5k, 5k-10k,
    10k-20k, 20k-30k (the same fractions at other sizes)."""
    cuts = [0, n // 30, n // 15, n // 6, n // 3, 2 * n // 3, n]
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]


def _at(marks: list[dict[str, float]], count: int) -> dict[str, float]:
    """The first checkpoint at or after ``count`` trials."""
    for mark in marks:
        if mark["trials"] >= count:
            return mark
    return marks[-1]


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    marks = result["marks"]
    n = int(marks[-1]["trials"])
    rows = []
    for a, b in segments(n):
        start, end = _at(marks, a), _at(marks, b)
        count = end["trials"] - start["trials"]
        if count <= 0:
            continue
        wall = end["wall"] - start["wall"]
        cpu = end["cpu"] - start["cpu"]
        server = None
        if start.get("server_cpu") is not None and end.get("server_cpu") is not None:
            server = (end["server_cpu"] - start["server_cpu"]) / count * 1000
        rows.append(
            {
                "from": int(start["trials"]),
                "to": int(end["trials"]),
                "per_min": count / wall * 60 if wall > 0 else float("inf"),
                "cpu_ms": cpu / count * 1000,
                "cpu_per_min": count / cpu * 60 if cpu > 0 else float("inf"),
                "server_ms": server,
                "rss_mb": end["rss_mb"],
                "db_mb": end["db_mb"],
            }
        )
    first, last = rows[0], rows[-1]
    return {
        "n": n,
        "rows": rows,
        "first": first["per_min"],
        "last": last["per_min"],
        "ratio": last["per_min"] / first["per_min"],
        "cpu_ratio": last["cpu_per_min"] / first["cpu_per_min"],
        "rss_growth_mb": marks[-1]["rss_mb"] - marks[0]["rss_mb"],
        "busy": {t: last["per_min"] * t / 60 for t in T_SECONDS},
        "total_min": (marks[-1]["wall"] - marks[0]["wall"]) / 60,
    }


def report(result: dict[str, Any]) -> list[str]:
    cfg = result["config"]
    s = summarise(result)
    server = any(row["server_ms"] is not None for row in s["rows"])
    lines = [
        f"### {cfg['sampler']}, pruner {cfg['pruner']}, {cfg['database']}, "
        f"proposer {cfg['proposer']}: {s['n']:,} trials in {cfg['rounds']} round(s), "
        f"{s['total_min']:.1f} min",
        "",
        "| trials | trials/min | driver CPU ms/trial | trials per driver CPU min "
        + ("| server CPU ms/trial " if server else "")
        + "| driver RSS MB | database MB |",
        "|---|---:|---:|---:|" + ("---:|" if server else "") + "---:|---:|",
    ]
    for row in s["rows"]:
        served = row["server_ms"]
        lines.append(
            f"| {row['from']:,}-{row['to']:,} | {row['per_min']:,.0f} | {row['cpu_ms']:.2f} "
            f"| {row['cpu_per_min']:,.0f} "
            + (f"| {'n/a' if served is None else f'{served:.2f}'} " if server else "")
            + f"| {row['rss_mb']:.0f} | {row['db_mb']:.1f} |"
        )
    busy = ", ".join(f"{s['busy'][t]:,.0f} at T={t} s" for t in T_SECONDS)
    lines += [
        "",
        f"- last/first rate: {s['ratio']:.2f}x ({s['last']:,.0f} / {s['first']:,.0f} trials/min); "
        f"by driver CPU: {s['cpu_ratio']:.2f}x",
        f"- load average while it ran: {result['load']:.1f} on {os.cpu_count()} CPUs",
        f"- driver RSS growth: {s['rss_growth_mb']:.0f} MB (peak {result['peak_rss_mb']:.0f} MB)",
        f"- workers kept busy at the last segment's ceiling: {busy}",
        f"- states: {', '.join(f'{k} {v:,}' for k, v in sorted(result['states'].items()))}",
        "",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samplers", default="tpe")
    parser.add_argument("--pruners", default="none")
    parser.add_argument("--databases", default="sqlite")
    parser.add_argument("--proposers", default="batched", help="batched, optuna or both")
    parser.add_argument("--workers", type=int, default=8, help="fake workers")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds per fake trial")
    parser.add_argument("--checkpoints", type=int, default=60)
    parser.add_argument("--smoke", action="store_true", help="a few hundred trials")
    parser.add_argument("--save", action="store_true", help="append to benchmarks/RESULTS.md")
    parser.add_argument("--json", action="store_true", help="print raw results as JSON")
    # one configuration, in a child process
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sampler", help=argparse.SUPPRESS)
    parser.add_argument("--pruner", help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    parser.add_argument("--proposer", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.trials = min(args.trials, 600)
        args.checkpoints = 30
    if args.one:
        print(json.dumps(run_one(args)))
        return 0
    proposers = ["batched", "optuna"] if args.proposers == "both" else args.proposers.split(",")
    started = datetime.datetime.now(datetime.UTC)
    command = "python benchmarks/driver_scale.py " + " ".join(sys.argv[1:])
    head = [
        f"Driver ceiling, {started:%Y-%m-%d %H:%M} UTC: `{command}`",
        "",
        f"Trials run on hpsearch.fake_cluster.FakeExecutor ({args.workers} fake workers, "
        f"each trial 'finishes' {args.delay:g} s after it is sent, no training): every "
        "figure is the driver's own work, the ceiling of one driver whatever the cluster's "
        "size. CPU is the driver process's (with a pruner the pruning oracle runs in the "
        "driver here); a local PostgreSQL server's CPU for the study's database is shown "
        "apart.",
        "",
    ]
    print("\n".join(head), flush=True)

    def save(lines: list[str]) -> None:  # as each study ends: a long run keeps what it measured
        if args.save:
            with open(ROOT / "benchmarks" / "RESULTS.md", "a") as handle:
                handle.write("\n".join(lines) + "\n")

    save(["", *head])
    results = []
    for database in args.databases.split(","):
        for pruner in args.pruners.split(","):
            for sampler in args.samplers.split(","):
                for proposer in proposers:
                    if proposer == "optuna" and sampler != "tpe":
                        continue  # only a learning sampler has a batched proposer
                    child = [
                        sys.executable, __file__, "--one", "--trials", str(args.trials),
                        "--rounds", str(args.rounds), "--sampler", sampler, "--pruner", pruner,
                        "--database", database, "--proposer", proposer,
                        "--workers", str(args.workers), "--delay", str(args.delay),
                        "--checkpoints", str(args.checkpoints),
                    ]  # fmt: skip
                    done = subprocess.run(child, capture_output=True, text=True, cwd=ROOT)
                    if done.returncode != 0:
                        sys.stderr.write(done.stderr)
                        return 1
                    result = json.loads(done.stdout.strip().splitlines()[-1])
                    results.append(result)
                    lines = report(result)
                    print("\n".join(lines), flush=True)
                    save(lines)
    if len(results) > 1:
        lines = [
            "| configuration | first trials/min | last trials/min | last/first | RSS growth MB |",
            "|---|---:|---:|---:|---:|",
        ]
        for result in results:
            cfg, s = result["config"], summarise(result)
            lines.append(
                f"| {cfg['sampler']} {cfg['pruner']} {cfg['database']} {cfg['proposer']} "
                f"| {s['first']:,.0f} | {s['last']:,.0f} | {s['ratio']:.2f}x "
                f"| {s['rss_growth_mb']:.0f} |"
            )
        print("\n".join(lines))
        save([*lines, ""])
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
