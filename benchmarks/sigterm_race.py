"""How often SIGTERM to ``hpsearch run`` ends in Ray's own crash instead of exit 143.

Starts Ray on loopback in this process (as the test suite does), then, REPEATS
times: writes a small study, starts ``hpsearch run --address ...`` as a separate
driver, waits until it has recorded a few trials and then a random extra delay
(so the signal lands at different moments of trials finishing), sends SIGTERM
and classifies the driver's end:

- ``ok``: exit 143 and the 'terminated' message;
- ``ray-crash``: Ray's core worker aborted the driver (a RAY_CHECK failure,
  "You have likely discovered a bug in Ray"): task_manager.cc's
  CompletePendingTask on a task that a ray.cancel had just failed;
- ``other``: anything else (exit code and the last stderr line are printed;
  ``--keep DIR`` keeps the whole stderr).

Short trials on many workers (``--epochs 3 --cpus 8 --workers 8``) put many
replies in flight when the signal lands; ``--load N`` adds N busy-looping
processes, as on CI's shared runners, where a preempted core-worker thread
widens the race window. ``--baseline DIR`` runs another hpsearch source tree
(``git archive REV hpsearch trainer | tar -x -C DIR``) interleaved with the
installed one, with the same delays, so the two are compared in one run.

Two more ways to hit the race, each in child drivers (an abort kills one):

- ``--stress ROUNDS``: ``RayExecutor.cancel_all`` in a session that outlives the
  run (API users, in-process runs), after 1 s + up to ``--max-delay`` s of a
  full queue of short trials (with ``--baseline`` too);
- ``--ray-only ROUNDS``: plain Ray tasks of 1-6 ms, 4 a round, cancelled 0-10 ms
  after submitting (force=False, so no worker restarts and many cancels a
  second) by ``ray.cancel`` in the driver (``direct``), the same after skipping
  finished refs (``skip-finished``), or by ``hpsearch.cluster.cancel_calls`` run
  as a task, as ``cancel_all`` does (``via-task``). The surest repro.

Usage (``export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` first)::

    python benchmarks/sigterm_race.py --repeats 30 --epochs 3 --hidden 16 --cpus 8
        --workers 8 --after 20 --max-delay 1.0 --baseline /tmp/base
    python benchmarks/sigterm_race.py --ray-only 300 --repeats 4
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

RAY_CHECK_FAILURE = "You have likely discovered a bug in Ray"

STUDY = """
[study]
name = "{name}"
seed = {seed}
sampler = "random"

[data]
dataset = "digits"
train_samples = 400
val_fraction = 0.2

[model]
hidden_sizes = [{hidden}, {hidden}]
epochs = {epochs}
batch_size = 40

[search.lr]
low = 1e-3
high = 1.0
log = true

[search.dropout_ratio]
low = 0.0
high = 0.4

[narrowing]
rounds = 2
trials_per_round = {trials}
top_k = 3

[resources]
workers = {workers}
pack_size = 1
"""


STRESS_CHILD = r"""
import random, sys, time
import ray
from hpsearch.cluster import RayExecutor
from hpsearch.worker import TrialTask
from trainer.config import TrainConfig
from trainer.datasets import make_synthetic

address, rounds, workers, max_delay, seed = sys.argv[1:6]
ray.init(address=address, logging_level="ERROR")
data = make_synthetic(200, n_features=8, n_classes=3, seed=0)
rng = random.Random(int(seed))
executor = RayExecutor(data, workers=int(workers))
executor.ready()
number = 0


def submit():
    global number
    config = TrainConfig(hidden_sizes=(8,), epochs=rng.randint(1, 20), batch_size=20,
                         lr=0.05, seed=number)
    executor.submit(TrialTask(number=number, trial_id=-1, round=0, params={"lr": 0.05},
                              seed=number, config=config, metric="val_accuracy"))
    number += 1


for r in range(int(rounds)):
    # Keep the queue full for a while (workers restart after a cancel), so calls
    # are finishing, their replies arriving, when cancel_all comes.
    until = time.monotonic() + 1.0 + rng.uniform(0.0, float(max_delay))
    while time.monotonic() < until:
        while executor.in_flight < executor.capacity:
            submit()
        executor.wait(timeout=0.005)
    executor.cancel_all()
    print(f"round {r}", flush=True)
executor.close()
print("done", flush=True)
"""


RAY_ONLY_CHILD = r"""
import random, sys, time
import ray
from hpsearch.cluster import cancel_calls

address, kind, rounds, seed = sys.argv[1:5]
ray.init(address=address, logging_level="ERROR")


@ray.remote(num_cpus=1, max_retries=0)
def spin(ms):
    start = time.perf_counter()
    while time.perf_counter() - start < ms / 1000:
        pass
    return b"x" * 2000


canceller = ray.remote(num_cpus=0, max_retries=0)(cancel_calls)
rng = random.Random(int(seed))
cancels = 0
for r in range(int(rounds)):
    refs = [spin.remote(rng.uniform(1, 6)) for _ in range(4)]
    time.sleep(rng.uniform(0.0, 0.01))
    todo = refs
    if kind == "skip-finished":
        _, todo = ray.wait(refs, num_returns=len(refs), timeout=0)
    if kind == "via-task":
        cancels += ray.get(canceller.remote(todo, force=False))
    else:
        for ref in todo:
            ray.cancel(ref, force=False)
            cancels += 1
    ray.wait(refs, num_returns=len(refs), timeout=30)
    print(f"round {r} cancels {cancels}", flush=True)
print("done", flush=True)
"""

RAY_ONLY_KINDS = ("direct", "skip-finished", "via-task")


def ray_only(address: str, args: argparse.Namespace, kind: str, seed: int):
    """One child driver: ``--ray-only`` rounds of 4 tasks of 1-6 ms, cancelled 0-10 ms
    after submitting (force=False: no worker restarts, so many cancels a second) by
    ``ray.cancel`` here (``direct``), the same after skipping finished refs
    (``skip-finished``), or by :func:`hpsearch.cluster.cancel_calls` run as a task,
    as ``RayExecutor.cancel_all`` does (``via-task``). Returns (end, cancels)."""
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", PYTHONUNBUFFERED="1")
    result = subprocess.run(
        [sys.executable, "-c", RAY_ONLY_CHILD, address, kind, str(args.ray_only), str(seed)],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("round ")]
    cancels = int(lines[-1].split()[-1]) if lines else 0
    if RAY_CHECK_FAILURE in result.stderr:
        return "ray-crash", cancels
    if result.returncode == 0 and "done" in result.stdout:
        return "ok", cancels
    return f"other (exit {result.returncode})", cancels


def stress(address: str, args: argparse.Namespace, variant: str, source: str | None, seed: int):
    """One child driver that cancels ``--stress`` rounds of calls with
    ``RayExecutor.cancel_all`` as they finish (a Ray session that outlives the
    run: the path API users and in-process runs take); how it ended."""
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", PYTHONUNBUFFERED="1")
    if source:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
    child = [sys.executable, "-c", STRESS_CHILD, address, str(args.stress), str(args.workers)]
    result = subprocess.run(
        [*child, str(args.max_delay), str(seed)],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    rounds = result.stdout.count("round ")
    if RAY_CHECK_FAILURE in result.stderr:
        return "ray-crash", rounds
    if result.returncode == 0 and "done" in result.stdout:
        return "ok", rounds
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        (Path(args.keep) / f"stress-{variant}-{seed}.stderr").write_text(result.stderr)
    return f"other (exit {result.returncode})", rounds


def _busy(stop) -> None:  # pragma: no cover - load generator
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def _finished(url: str, name: str) -> int:
    import optuna

    try:
        trials = optuna.load_study(study_name=name, storage=url).get_trials()
    except Exception:  # not created yet
        return 0
    return sum(t.state.is_finished() for t in trials)


def one_run(
    tmp: Path,
    address: str,
    name: str,
    i: int,
    args: argparse.Namespace,
    delay: float,
    source: str | None,
):
    study = tmp / f"{name}.toml"
    study.write_text(
        STUDY.format(
            name=name,
            seed=i,
            hidden=args.hidden,
            epochs=args.epochs,
            trials=args.trials,
            workers=args.workers,
        )
    )
    url = f"sqlite:///{tmp / f'{name}.db'}"
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", PYTHONUNBUFFERED="1")
    if source:  # the baseline's hpsearch (and trainer) before the installed one
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
    driver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hpsearch",
            "run",
            str(study),
            "--storage",
            url,
            "--address",
            address,
            "--quiet",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while _finished(url, name) < args.after and driver.poll() is None:
            if time.monotonic() > deadline:
                raise RuntimeError("no trials recorded in 240 s")
            time.sleep(0.02)
        time.sleep(delay)
        if driver.poll() is not None:
            return "finished-before-signal", driver.returncode, ""
        driver.send_signal(signal.SIGTERM)
        _, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if args.keep and not (driver.returncode == 143 and "terminated (SIGTERM)" in err):
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        (Path(args.keep) / f"{name}.stderr").write_text(err)
    if RAY_CHECK_FAILURE in err:
        where = next((ln for ln in lines if RAY_CHECK_FAILURE in ln), "")
        return "ray-crash", driver.returncode, where[:200]
    if driver.returncode == 143 and "terminated (SIGTERM)" in err:
        return "ok", 143, ""
    return "other", driver.returncode, (lines[-1] if lines else "")[:200]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--epochs", type=int, default=60, help="epochs per trial (short: more replies)")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--trials", type=int, default=200, help="trials per round")
    p.add_argument("--after", type=int, default=3, help="signal once this many trials finished")
    p.add_argument("--max-delay", type=float, default=1.5, help="random extra delay (s)")
    p.add_argument("--load", type=int, default=0, help="busy-looping processes meanwhile")
    p.add_argument("--cpus", type=int, default=2, help="CPUs the local Ray says it has")
    p.add_argument("--workers", type=int, default=2, help="parallel trials")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", default=None, help="write the stderr of runs not 'ok' here")
    p.add_argument(
        "--stress",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="instead of SIGTERM runs: REPEATS child drivers each cancel ROUNDS rounds of "
        "calls with RayExecutor.cancel_all, each after 1 s + up to max-delay s of a full queue",
    )
    p.add_argument(
        "--ray-only",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="instead: REPEATS child drivers per way of cancelling plain Ray tasks as "
        "they finish (direct, skip-finished, via-task), ROUNDS rounds each",
    )
    p.add_argument(
        "--baseline",
        default=None,
        metavar="DIR",
        help="also run the hpsearch in DIR (e.g. from 'git archive REV hpsearch trainer'), "
        "interleaved with the installed one, same delays",
    )
    p.add_argument("--smoke", action="store_true", help="one quick repeat (the test suite's)")
    args = p.parse_args()
    if args.smoke:
        args.repeats, args.trials, args.after, args.max_delay = 1, 30, 2, 0.2
        args.stress, args.ray_only = min(args.stress, 2), min(args.ray_only, 5)

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, logging_level="WARNING")
    address = ray.get_runtime_context().gcs_address
    stop = multiprocessing.Event()
    hogs = [multiprocessing.Process(target=_busy, args=(stop,)) for _ in range(args.load)]
    for h in hogs:
        h.start()
    rng = random.Random(args.seed)
    variants = {"installed": None}
    if args.baseline:
        variants["baseline"] = str(Path(args.baseline).resolve())
    start = time.monotonic()
    try:
        if args.ray_only:
            summary = _run_ray_only(address, args, start)
        elif args.stress:
            summary = _run_stress(address, args, variants, start)
        else:
            summary = _run_sigterms(address, args, variants, rng, start)
    finally:
        stop.set()
        for h in hogs:
            h.join()
        ray.shutdown()
    for line in summary:
        print(line, flush=True)


def _run_ray_only(address: str, args: argparse.Namespace, start: float) -> list[str]:
    """``--ray-only``: each way of cancelling in its own drivers; the summary lines."""
    ended: dict[str, Counter[str]] = {k: Counter() for k in RAY_ONLY_KINDS}
    cancels: Counter[str] = Counter()
    for i in range(args.repeats):
        for kind in RAY_ONLY_KINDS[i % 3 :] + RAY_ONLY_KINDS[: i % 3]:
            end, n = ray_only(address, args, kind, i)
            ended[kind][end] += 1
            cancels[kind] += n
            print(f"{kind} {i}: {end} after {n} cancels", flush=True)
    lines = [
        f"sigterm_race --ray-only: {args.repeats} drivers x {args.ray_only} rounds per "
        f"way, load {args.load}, {time.monotonic() - start:.0f} s"
    ]
    for kind in RAY_ONLY_KINDS:
        lines.append(
            f"  {kind}: {cancels[kind]} cancels; drivers "
            + ", ".join(f"{k} {v}/{args.repeats}" for k, v in sorted(ended[kind].items()))
        )
    return lines


def _run_stress(
    address: str, args: argparse.Namespace, variants: dict[str, str | None], start: float
) -> list[str]:
    """``--stress``: cancel_all in a session that outlives the run; the summary lines."""
    counts: dict[str, Counter[str]] = {v: Counter() for v in variants}
    rounds_run: Counter[str] = Counter()
    for i in range(args.repeats):
        order = list(variants) if i % 2 == 0 else list(reversed(variants))
        for variant in order:
            kind, rounds = stress(address, args, variant, variants[variant], i)
            counts[variant][kind] += 1
            rounds_run[variant] += rounds
            print(f"{variant} {i}: {kind} after {rounds} rounds", flush=True)
    lines = [
        f"sigterm_race --stress: {args.repeats} drivers x {args.stress} rounds of "
        f"cancel_all, workers {args.workers} (Ray told {args.cpus} CPUs), load "
        f"{args.load}, {time.monotonic() - start:.0f} s"
    ]
    for variant, c in counts.items():
        where = variants[variant] or "installed"
        lines.append(
            f"  {variant} ({where}): {rounds_run[variant]} rounds; drivers "
            + ", ".join(f"{k} {v}/{sum(c.values())}" for k, v in sorted(c.items()))
        )
    return lines


def _run_sigterms(
    address: str,
    args: argparse.Namespace,
    variants: dict[str, str | None],
    rng: random.Random,
    start: float,
) -> list[str]:
    """SIGTERM to real ``hpsearch run`` drivers; the summary lines."""
    counts: dict[str, Counter[str]] = {v: Counter() for v in variants}
    with tempfile.TemporaryDirectory(prefix="sigterm_race_") as tmp:
        for i in range(args.repeats):
            delay = rng.uniform(0.0, args.max_delay)
            order = list(variants) if i % 2 == 0 else list(reversed(variants))
            for variant in order:
                name = f"{variant}{i}"
                kind, code, detail = one_run(
                    Path(tmp), address, name, i, args, delay, variants[variant]
                )
                counts[variant][kind] += 1
                if kind != "ok":
                    print(f"{name}: {kind} (exit {code}) {detail}", flush=True)
    lines = [
        f"sigterm_race: {args.repeats} repeats, epochs {args.epochs}, workers {args.workers} "
        f"(Ray told {args.cpus} CPUs), load {args.load}, {time.monotonic() - start:.0f} s"
    ]
    for variant, c in counts.items():
        total = sum(c.values())
        where = variants[variant] or "installed"
        lines.append(
            f"  {variant} ({where}): " + ", ".join(f"{k} {v}/{total}" for k, v in sorted(c.items()))
        )
    return lines


if __name__ == "__main__":
    main()
