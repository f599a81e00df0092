"""What the objective seam costs the driver per trial (not a test).

Runs N near-empty trials of each kind of objective through the real driver
(SQLite results database, 2 Ray workers, one round) and prints, per kind:

* trials/s of the search (workers already started);
* driver CPU ms/trial: the driver process's CPU time (``time.process_time``,
  all its threads: sampling, Ray submission, recording) over the search,
  per trial; what the issue's goal (< 20 ms for a command) is about;
* overhead ms/trial: (wall - the trials' own time / workers) / trials, the
  time the driver, Ray and the database add around the trials (a command's
  own time includes its process start, so that is excluded here too);
* trial ms: the median trial's own time (a command's process start included).

The kinds: the built-in MLP (one epoch on 48 digits, unpacked), a function
objective that returns at once, and a command objective running a no-op
Python script that prints one JSON line. Ratios are against the built-in
objective, measured in this one process, kinds interleaved over repeats.

    python benchmarks/objectives.py            # 100 trials, 3 repeats
    python benchmarks/objectives.py --smoke    # a few seconds, for the tests
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

COMMON = """
[narrowing]
rounds = 1
trials_per_round = {trials}
top_k = 5

[resources]
workers = 2
pack_size = 1
"""

BUILTIN = """
[study]
name = "{name}"
seed = 0

[data]
dataset = "digits"
train_samples = 60
val_fraction = 0.2

[model]
hidden_sizes = [16]
epochs = 1
batch_size = 48

[search.lr]
low = 1e-3
high = 1.0
log = true

[search.batchnorm]
choices = [true, false]
"""

USER = """
[study]
name = "{name}"
metric = "score"
direction = "maximize"
seed = 0

[objective]
{objective}

[search.lr]
low = 1e-3
high = 1.0
log = true

[search.batchnorm]
choices = [true, false]
"""

FUNCTION = """
def train(params, trial):
    trial.report(params["lr"], 1)
    return params["lr"]
"""

SCRIPT = """
import json, sys
print(json.dumps({"step": 1, "score": float(sys.argv[1].split("=")[1])}))
"""

KINDS = {
    "built-in": None,
    "function": 'function = "noop:train"',
    "command": 'command = ["python", "noop_script.py"]',
}


def write_studies(directory: Path, trials: int, repeat: int) -> dict[str, Path]:
    """The three study files of one repeat (with the objective's code beside them)."""
    code = directory / "code"
    code.mkdir(exist_ok=True)
    (code / "noop.py").write_text(FUNCTION)
    (code / "noop_script.py").write_text(SCRIPT)
    paths = {}
    for kind, objective in KINDS.items():
        name = f"{kind}-{repeat}"
        text = (
            BUILTIN.format(name=name)
            if objective is None
            else USER.format(name=name, objective=objective)
        )
        path = code / f"{name}.toml"
        path.write_text(text + COMMON.format(trials=trials))
        paths[kind] = path
    return paths


def run_once(path: Path, url: str) -> tuple[float, float, list[float]]:
    """One search; (wall s, driver CPU s, each trial's own s)."""
    import optuna

    import hpsearch
    from hpsearch.config import load_study
    from hpsearch.search import SearchObserver

    class Clock(SearchObserver):  # the search's own time, workers already up
        def round_started(self, record, total_rounds):
            self.start = time.perf_counter()
            self.cpu = time.process_time()

    config = load_study(path)
    clock = Clock()
    hpsearch.run(config, storage=url, observer=clock, wait_for_workers=True)
    wall = time.perf_counter() - clock.start
    cpu = time.process_time() - clock.cpu
    done = optuna.load_study(study_name=config.name, storage=url).get_trials()
    assert len(done) == config.narrowing.trials_per_round, f"{config.name}: {len(done)} trials"
    states = {t.state.name for t in done}
    assert states == {"COMPLETE"}, f"{config.name}: trials {states}"
    return wall, cpu, [t.user_attrs.get("train_seconds", 0.0) for t in done]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    args = parser.parse_args(argv)
    if args.smoke:
        args.trials, args.repeats = 12, 1

    import optuna
    import ray

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    workers = 2
    rows = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            url = f"sqlite:///{directory / 'bench.db'}"
            samples: dict[str, list[tuple[float, float, list[float]]]] = {k: [] for k in KINDS}
            for repeat in range(args.repeats):
                paths = write_studies(directory, args.trials, repeat)
                for kind in KINDS:  # interleaved: noise hits every kind
                    samples[kind].append(run_once(paths[kind], url))
            for kind, runs in samples.items():
                rows[kind] = (
                    args.trials / statistics.median(w for w, _, _ in runs),
                    statistics.median(c / args.trials for _, c, _ in runs) * 1e3,
                    statistics.median((w - sum(t) / workers) / args.trials for w, _, t in runs)
                    * 1e3,
                    statistics.median(x for _, _, t in runs for x in t) * 1e3,
                )
    finally:
        if started:
            ray.shutdown()

    print(
        f"hpsearch objectives: {args.trials} trials, {workers} workers, "
        f"median of {args.repeats} repeats"
    )
    print(
        f"{'objective':>9}  {'trials/s':>9}  {'driver cpu ms/trial':>19}  "
        f"{'overhead ms/trial':>17}  {'trial ms':>8}"
    )
    for kind, (rate, cpu, overhead, trial) in rows.items():
        print(f"{kind:>9}  {rate:>9.1f}  {cpu:>19.2f}  {overhead:>17.2f}  {trial:>8.2f}")
    base = rows["built-in"]
    for kind in ("function", "command"):
        print(
            f"ratio {kind} / built-in: driver cpu {rows[kind][1] / base[1]:.2f}, "
            f"overhead {rows[kind][2] / base[2]:.2f}"
        )
    print(f"command driver cpu ms/trial: {rows['command'][1]:.2f} (goal < 20)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
