"""The Ray execution layer: trial calls on Ray's worker processes, from a bounded queue.

Each call is a Ray task (:func:`hpsearch.worker.run_call`) that trains one
trial, a pack or a chain of :class:`~hpsearch.worker.TrialTask` objects and
returns their :class:`~hpsearch.worker.TrialOutcome` objects. Ray runs tasks in
worker processes it keeps from call to call (and from study to study in one
Ray session), so a call costs about a millisecond, not a process start. The
executor readies ``workers`` of them while the driver opens the database.
Measured here: 0.55-0.6 s from the executor's start to workers ready in a
fresh Ray session, 0.14-0.17 s in a session that ran a study before (with one
actor per worker, as before, 0.5-0.65 s and 0.9-1.15 s). The dataset is put
in the object store once: one copy per node, read zero-copy by every call
there.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from hpsearch.capacity import trial_slots, wait_for_fit
from hpsearch.config import StudyConfig
from hpsearch.errors import ClusterError
from hpsearch.worker import TrialOutcome, TrialTask, run_call, warm_up
from trainer.datasets import Dataset

logger = logging.getLogger(__name__)

AUTO_PACK_SIZE = 16
"""Pack size when the study says ``pack_size = 0`` and packing pays.

Measured with ``benchmarks/packing.py`` part (c) (digits 64-50-50-10, +BN,
dropout, 2 workers, 400 trials, quiet machine, three runs of 5 repeats with
trials as Ray tasks): search throughput 1.70-1.82x unpacked at 8, 1.84-2.05x
at 16, 1.78-2.12x at 32; 32 would put twice as many trials in flight (sampled
before any of them reports) for no steady gain."""


def effective_pack_size(config: StudyConfig, n_features: int, n_classes: int) -> int:
    """How many trials to pack together for this study (1: no packing).

    ``pack_size = 1`` never packs; ``N >= 2`` packs up to N; ``0`` (auto) packs
    up to :data:`AUTO_PACK_SIZE` when :func:`trainer.packed.pack_pays` says a
    representative trial of the study (each range at its low end) is small
    enough for stacked training to raise throughput.
    """
    from trainer.packed import pack_pays

    size = config.resources.pack_size
    if size >= 1:
        return size
    if not config.builtin:  # packing is an ability of the built-in objective
        return 1
    sample = {
        name: spec.choices[0] if hasattr(spec, "choices") else spec.low
        for name, spec in config.space.items()
    }
    probe = config.train_config(sample, 0)
    return AUTO_PACK_SIZE if pack_pays(probe, n_features, n_classes) else 1


@dataclass(frozen=True)
class ClusterInfo:
    address: str
    nodes: int
    cpus: float
    gpus: float
    workers: int


ADDRESS_TIMEOUT = 15.0
"""Seconds :func:`check_address` waits for a Ray cluster to answer."""


ADDRESS_ENV = "RAY_ADDRESS"
"""The environment variable ``ray.init`` joins when no address is given (``ray job
submit`` sets it for the job's driver)."""


def resolve_address(address: str | None) -> tuple[str | None, str]:
    """The Ray cluster to join and where that came from, as ``ray.init`` does.

    ``--address`` wins; without it a non-empty :data:`ADDRESS_ENV` is joined
    (``ray job submit`` sets it to the cluster's GCS address); without either,
    Ray is started locally (``None``).

    Returns:
        ``(address or None, source)`` with source ``"--address"``,
        ``"RAY_ADDRESS"`` or ``"local"``.
    """
    import os

    if address is not None:
        return address, "--address"
    from_env = os.environ.get(ADDRESS_ENV, "")
    if from_env:
        return from_env, ADDRESS_ENV
    return None, "local"


def _start_locally_hint(source: str) -> str:
    if source == ADDRESS_ENV:
        return f"unset {ADDRESS_ENV} (or pass --address local) to start Ray locally"
    return "omit --address to start Ray locally"


def check_address(
    address: str, *, timeout: float = ADDRESS_TIMEOUT, source: str = "--address"
) -> str:
    """Check that a Ray cluster answers at ``address``, within ``timeout`` seconds.

    ``auto`` must find a cluster started on this machine (``ray start``);
    ``HOST:PORT`` (the head's GCS) and ``ray://HOST:PORT`` (Ray Client) must
    accept a TCP connection and answer gRPC. ``local`` (start Ray here) is
    not checked. Nothing is started and Ray prints nothing, so a bad address
    costs at most ``timeout`` seconds and one line. Messages name ``source``,
    where the address came from (``--address`` or ``RAY_ADDRESS``).

    Returns:
        ``address`` without surrounding blanks.

    Raises:
        ConfigError: The address is malformed (the CLI exits 2).
        ClusterError: No Ray cluster answers there (the CLI exits 1).
    """
    import socket
    import time

    from hpsearch.errors import ConfigError

    text = address.strip()
    forms = "expected 'auto', HOST:PORT or ray://HOST:PORT"
    local = _start_locally_hint(source)
    if not text:
        raise ConfigError(f"{source}: got {address!r}; {forms}")
    if text == "local":
        return text
    start = time.monotonic()
    if text == "auto":
        from hpsearch import internals

        try:
            target = internals.ray_auto_address()
        except (ConnectionError, ValueError) as exc:
            reason = " ".join(str(exc).split())
            raise ClusterError(
                f"{source} auto: no Ray cluster runs on this machine ({reason}); start one "
                f"with 'ray start --head', give its HOST:PORT, or {local}"
            ) from exc
        if target is None:  # Ray's private lookup is off: ray.init resolves 'auto' itself
            return text
    elif text.startswith("ray://"):
        target = text[len("ray://") :]
    elif "://" in text or "/" in text:
        hint = ""
        if source == ADDRESS_ENV and text.startswith(("http://", "https://")):
            # The dashboard's address, which `ray job submit` reads from RAY_ADDRESS.
            hint = (
                f"; that is a dashboard address (for ray job submit), not the cluster's: "
                f"{local}, or pass --address HOST:PORT"
            )
        raise ConfigError(f"{source}: got {text!r}; {forms}{hint}")
    else:
        target = text
    host, colon, port_text = target.rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{source}: got {text!r}; {forms} (PORT a number 1-65535)")
    port = int(port_text)
    if not text.startswith("ray://") and text != "auto":
        try:  # Ray connects to this machine's address, not loopback: probe the same
            from hpsearch import internals

            host = internals.ray_local_ip(host)
        except Exception:  # a best effort: then probe the address as given
            pass
    where = f"{host}:{port}"
    fix = f"start the cluster there (ray start --head --port=PORT), check HOST:PORT, or {local}"
    try:
        with socket.create_connection((host, port), timeout=max(0.5, min(5.0, timeout))):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if isinstance(exc, TimeoutError | socket.timeout):
            reason = "no answer within the connect timeout"
        raise ClusterError(
            f"{source} {text}: no Ray cluster answers at {where} ({reason}); {fix}"
        ) from exc
    import grpc

    channel = grpc.insecure_channel(where)
    try:
        wait = max(0.5, timeout - (time.monotonic() - start))
        grpc.channel_ready_future(channel).result(timeout=wait)
    except grpc.FutureTimeoutError as exc:
        raise ClusterError(
            f"{source} {text}: {where} accepts connections but does not answer as a Ray "
            f"cluster within {timeout:g} s; give the address 'ray start --head' printed, or "
            f"{local}"
        ) from exc
    finally:
        channel.close()
    return text


@contextmanager
def ray_session(
    address: str | None,
    *,
    num_cpus: int | None = None,
    timeout: float = ADDRESS_TIMEOUT,
    source: str = "--address",
) -> Iterator[bool]:
    """Start Ray locally (no address) or join a cluster; yields whether we started it.

    Ray already initialised in this process (e.g. by a test fixture) is reused
    and left running. An ``address`` is first checked with
    :func:`check_address` (bounded by ``timeout`` seconds), so an unreachable
    cluster is a one-line :class:`ClusterError` instead of Ray retrying for
    minutes. No address starts Ray here even when ``RAY_ADDRESS`` is set
    (:func:`resolve_address` decides that first).
    """
    import ray

    if ray.is_initialized():
        yield False
        return
    if address:
        address = check_address(address, timeout=timeout, source=source)
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "log_to_driver": True,
        "configure_logging": True,
    }
    try:
        if address and address != "local":
            ray.init(address=address, **kwargs)
        else:
            ray.init(address="local", num_cpus=num_cpus, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local Ray instance"
        reason = " ".join(str(exc).split())
        if len(reason) > 300:
            reason = reason[:297] + "..."
        raise ClusterError(f"{source}: could not start or reach {where}: {reason}") from exc
    try:
        yield True
    finally:
        ray.shutdown()


CANCEL_WAIT = 10.0
"""Seconds :meth:`RayExecutor.cancel_all` waits for its cancel requests to be sent."""


def cancel_calls(refs: list[Any], *, force: bool) -> int:
    """Cancel the calls behind ``refs``: run as a Ray task by
    :meth:`RayExecutor.cancel_all`, so that the cancels reach their owner as
    requests. Returns how many were asked."""
    import ray

    for ref in refs:
        try:
            ray.cancel(ref, force=force)
        except Exception:  # finished meanwhile, or the owner is gone
            logger.debug("cancel of %s failed", ref, exc_info=True)
    return len(refs)


class QueueLimits:
    """How many trials an executor keeps in flight, from its ``workers``,
    ``queue_depth`` calls per worker, and trials per call (``pack_size`` stacked
    or ``chain_size`` in a row). Shared with :class:`hpsearch.fake_cluster.FakeExecutor`."""

    workers: int
    queue_depth: int
    pack_size: int
    chain_size: int

    @property
    def _per_call(self) -> int:
        return max(self.pack_size, self.chain_size)

    @property
    def capacity(self) -> int:
        """How many trials may be in flight: ``queue_depth`` calls per worker."""
        return self.workers * self.queue_depth * self._per_call

    @property
    def low_water(self) -> int:
        """Refill the queue when no more than this many trials are in flight."""
        return self.workers * self._per_call


class RayExecutor(QueueLimits):
    """Runs trials as Ray tasks, keeping ``queue_depth`` calls queued per worker.

    ``data`` is the built-in objective's dataset (None for a user's objective);
    ``code`` is a user's study folder, ``(digest, zip archive)``
    (:func:`hpsearch.objective.pack_folder`), shipped to every node through the
    object store.

    ``workers`` trials (or packs, or chains) run at once. When the cluster has
    room for more than that, only ``workers`` calls are in flight, so no more
    run at once than asked for.

    Before anything is sent, some node must be able to hold one trial
    (:func:`hpsearch.capacity.wait_for_fit`): else a :class:`ConfigError`, or,
    on a cluster an autoscaler can grow, a wait reported through ``on_wait``.
    """

    def __init__(
        self,
        data: Dataset | None,
        *,
        workers: int | None,
        cpus_per_trial: float = 1.0,
        gpus_per_trial: float = 0.0,
        queue_depth: int = 3,
        pruner: str = "none",
        direction: str = "maximize",
        study_name: str = "study",
        max_epochs: int = 1,
        prune_after: int | None = None,
        max_retries: int = 2,
        pack_size: int = 1,
        on_wait: Callable[[str], None] | None = None,
        code: tuple[str, bytes] | None = None,
    ) -> None:
        import ray

        # A trial larger than every node would wait in Ray forever: fail now, or
        # wait for an autoscaler (saying so through on_wait), before any call.
        nodes = wait_for_fit(cpus_per_trial, gpus_per_trial, on_wait=on_wait)
        cpus = sum(n.get("CPU", 0.0) for n in nodes)
        gpus = sum(n.get("GPU", 0.0) for n in nodes)
        # Counted node by node: two 3-CPU nodes hold two 2-CPU trials, not three.
        slots = trial_slots(nodes, cpus_per_trial, gpus_per_trial)
        if slots is not None:
            slots = max(1, slots)
        if workers is None:
            workers = slots or 1
        self._ray = ray
        self.workers = workers
        # More room in the cluster than workers asked for: no queue beyond the
        # running calls, or Ray would run the queued ones at once too.
        self.queue_depth = queue_depth if slots is None or workers >= slots else 1
        self.max_retries = max_retries
        self.pack_size = max(1, pack_size)
        self.chain_size = 1  # unpacked trials per call, run one after another (see chain)
        self._threads = max(1, int(cpus_per_trial))
        self._data_ref = ray.put(data)
        # A user's study folder, in the object store once, unpacked once per node.
        self._code = (code[0], ray.put(code[1])) if code is not None else None
        # Ray retries nothing itself: a call that lost its worker is re-run
        # here, counted in TrialTask.attempt and recorded. max_calls=0: worker
        # processes are reused from call to call, GPU calls too (Ray's default
        # for GPU tasks is a new process per call: a torch import each time).
        # SPREAD: a study's calls go over every node with room, not first to
        # fill one node (Ray's default packs tasks onto few nodes).
        self._options = {
            "num_cpus": cpus_per_trial,
            "num_gpus": gpus_per_trial,
            "scheduling_strategy": "SPREAD",
        }
        self._task = self._remote(run_call)
        self.oracle = None
        if pruner != "none":
            from hpsearch.pruning import PruningOracle

            self.oracle = (
                ray.remote(PruningOracle)
                .options(num_cpus=0)
                .remote(pruner, direction, study_name, max_epochs, prune_after)
            )
        self._inflight: dict[Any, tuple[list[TrialTask], bool]] = {}
        self.session_ends_with_run = False
        """True when the Ray session ends as soon as the run does (``hpsearch run``
        sets it for the session it started or joined): :meth:`cancel_all` then
        leaves the running calls to the session's end instead of cancelling them."""
        # Ready the worker processes now, while the driver opens the database.
        warm = self._remote(warm_up)
        self._warming = [warm.remote(self._threads) for _ in range(workers)]
        self.info = ClusterInfo(
            address=ray.get_runtime_context().gcs_address,
            nodes=len(nodes),
            cpus=cpus,
            gpus=gpus,
            workers=workers,
        )

    def _remote(self, fn: Any) -> Any:
        """``fn`` as a Ray task with this executor's resources and options."""
        return self._ray.remote(max_calls=0, max_retries=0)(fn).options(**self._options)

    def preload_pruner(self, trials: list[tuple[int, str, float | None, dict[int, float]]]) -> None:
        """Give the pruning oracle the curves of trials recorded before this run."""
        if self.oracle is not None and trials:
            self._ray.get(self.oracle.preload.remote(trials))

    def ready(self) -> None:
        """Block until ``workers`` worker processes have imported the trainer
        (started by the constructor) and the pruning oracle, if any, answers."""
        refs = list(self._warming)
        if self.oracle is not None:
            refs.append(self.oracle.ping.remote())
        self._ray.get(refs)

    @property
    def in_flight(self) -> int:
        """Trials (not packs) submitted and not yet collected."""
        return sum(len(tasks) for tasks, _ in self._inflight.values())

    def submit(self, task: TrialTask) -> None:
        self.submit_pack([task])

    def submit_pack(self, tasks: list[TrialTask]) -> None:
        """Send compatible trials in one call, trained as one stacked computation."""
        self._call(tasks, stacked=True)

    def submit_chain(self, tasks: list[TrialTask]) -> None:
        """Send trials in one call, trained one after another.

        For short trials: one call (and one result) per chain instead of per
        trial halves or quarters Ray's per-call cost in the driver and the
        worker; each trial trains exactly as alone.
        """
        self._call(tasks, stacked=False)

    def _call(self, tasks: list[TrialTask], *, stacked: bool) -> None:
        ref = self._task.remote(
            self._data_ref, tasks, stacked, self._threads, self.oracle, self._code
        )
        self._inflight[ref] = (tasks, stacked)

    def in_flight_tasks(self) -> list[TrialTask]:
        return [task for tasks, _ in self._inflight.values() for task in tasks]

    def cancel_all(self) -> None:
        """Stop every running trial now (SIGTERM, a second Ctrl-C, an error).

        Never with ``ray.cancel`` from this thread: Ray 2.60's core worker then
        aborts the driver (task_manager.cc:1329, "Tried to complete task that was
        not pending") when the cancel lands while Ray's I/O thread handles that
        task's reply: the reply handler takes the task out of its executing set
        and then completes it, and a cancel in between finds it neither queued
        nor executing and fails it first. Checking first that the call has not
        finished does not help (the window is inside the reply's handling);
        ``benchmarks/sigterm_race.py`` measures both.

        When the Ray session ends right after the run
        (:attr:`session_ends_with_run`, ``hpsearch run``'s own session), the
        calls are only forgotten: the session's end stops them (a local Ray is
        shut down with its workers; on a cluster the raylets kill the worker
        processes a disconnected driver leased). Otherwise a small task cancels
        them (force: their worker processes are killed, and Ray starts new
        ones): a cancel asked by another process reaches this driver, their
        owner, as a request that its I/O thread handles between replies, never
        inside one. This waits up to :data:`CANCEL_WAIT` seconds for the
        requests to be sent.
        """
        refs = list(self._inflight)
        self._inflight.clear()
        if self.session_ends_with_run or not refs:
            return
        ray = self._ray
        canceller = ray.remote(num_cpus=0, max_retries=0)(cancel_calls)
        # In a list, the refs reach the task as refs (borrowed), not as values.
        ray.wait([canceller.remote(refs, force=True)], timeout=CANCEL_WAIT)

    def wait(self, timeout: float | None = None) -> list[TrialOutcome]:
        """Block until at least one trial finishes (or ``timeout``); return all finished.

        A call whose worker died (its process or node was lost) is re-run up to
        ``max_retries`` times (counted in ``TrialTask.attempt`` and recorded),
        then its trials are recorded as FAIL with the reason.
        """
        if not self._inflight:
            return []
        ray = self._ray
        ready, _ = ray.wait(list(self._inflight), num_returns=1, timeout=timeout)
        if not ready:
            return []
        ready, _ = ray.wait(list(self._inflight), num_returns=len(self._inflight), timeout=0)
        outcomes = []
        for ref in ready:
            tasks, stacked = self._inflight.pop(ref)
            try:
                outcomes.extend(ray.get(ref))
                continue
            except Exception as exc:  # the worker died or Ray failed the call
                reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            logger.warning("trial(s) %s lost their worker (%s)", [t.number for t in tasks], reason)
            if tasks[0].attempt < self.max_retries:
                retry = [dataclasses.replace(t, attempt=t.attempt + 1) for t in tasks]
                self._call(retry, stacked=stacked)
                continue
            outcomes.extend(
                TrialOutcome(
                    number=task.number,
                    trial_id=task.trial_id,
                    round=task.round,
                    seed=task.seed,
                    params=task.params,
                    state="FAIL",
                    value=None,
                    fail_reason=f"worker lost {task.attempt + 1} times: {reason}"[:500],
                    backend=task.config.backend if task.config is not None else "",
                    retries=task.attempt,
                )
                for task in tasks
            )
        return outcomes

    def close(self) -> None:
        """Stop what is still running (nothing, after a finished study)."""
        if self._inflight:
            self.cancel_all()
        if self.oracle is not None:
            try:
                self._ray.kill(self.oracle)
            except Exception:  # pragma: no cover - best effort on shutdown
                pass
            self.oracle = None
