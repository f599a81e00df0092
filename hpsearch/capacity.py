"""What the Ray cluster can hold: does one trial fit on a node, and can the cluster grow.

A trial is one Ray task asking for ``cpus_per_trial`` CPUs and
``gpus_per_trial`` GPUs, and a task runs on one node: a trial larger than
every node never starts, and Ray would keep it pending forever. So before
anything is written, :func:`wait_for_fit` looks at every live node's total
resources (``ray.nodes()``, per node, not the cluster's sum) and

* returns at once when some node can hold one trial;
* raises :class:`~hpsearch.errors.ConfigError` (one line naming the request
  and what the largest node offers) when none can and the cluster cannot grow;
* waits when an autoscaler may add a node, saying every :data:`SAY_EVERY`
  seconds what is missing, while one placeholder task with the trial's
  resources tells the autoscaler what to add. Ctrl-C ends the wait at once.

Whether the cluster can grow (:func:`cluster_growth`) is read from what Ray
keeps in its GCS and on the head, none of it public API (read through
:mod:`hpsearch.internals`, checked against Ray 2.60's sources; each source that
fails to answer is skipped, and sources 1-3 are off on a Ray release hpsearch
was not tested with):

1. the cluster config an autoscaler reports to the GCS
   (``ray._private.state.state.get_cluster_config()``, internal KV namespace
   ``__autoscaler``; what Ray Data's and Ray Train's resource checks read):
   its node groups with room to add nodes, with their resources, so a trial
   that fits none of them is an error even here;
2. autoscaler v1's status in the GCS internal KV
   (``ray._private.ray_constants.DEBUG_AUTOSCALING_STATUS``, written every few
   seconds by the monitor on the head): a cluster started without an
   autoscaling config is mirrored with one read-only node type per node, named
   ``node_<node id>``; any other node type name (``ray.head.default``, a
   KubeRay worker group) or a pending launch means a configured autoscaler;
3. autoscaler v2's cluster status (``ray.autoscaler.v2.utils.is_autoscaler_v2``,
   ``ray.autoscaler.v2.sdk.get_cluster_status``), read the same way;
4. the cluster launcher's ``~/ray_bootstrap_config.yaml`` on the driver's
   machine (``ray up`` writes it on the head, where ``ray job submit`` runs the
   driver; Ray Tune's ``_is_ray_cluster`` checks the same file): worker node
   types with ``max_workers > 0``.

Sources 2-4 do not say what a new node would hold (the resources of a cloud
instance type are found when it starts), so there the driver waits.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpsearch import internals
from hpsearch.errors import ConfigError

logger = logging.getLogger(__name__)

SAY_EVERY = 30.0
"""Seconds between the lines that say what a waiting driver still misses."""
POLL_EVERY = 2.0
"""Seconds between looks at the cluster's nodes while waiting."""
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
"""Where the cluster launcher (``ray up``) leaves the cluster's config on the head."""

_EPS = 1e-9  # Ray keeps resources in fixed point (1e-4); a trial of 0.5 GPU fits 0.5
_READ_ONLY_TYPE = re.compile(r"node_[0-9a-fA-F]{40,}")  # a node no autoscaler launched

NodeResources = Mapping[str, float]


@dataclass(frozen=True)
class Growth:
    """Whether the cluster may gain nodes.

    Attributes:
        can_grow: An autoscaler may add nodes.
        shapes: The resources of each node type it may add, when known
            (None: unknown, e.g. a cloud instance type's).
        source: Where this was read, for messages.
    """

    can_grow: bool
    shapes: tuple[dict[str, float], ...] | None = None
    source: str = ""


NO_GROWTH = Growth(False, (), "no autoscaler found")


def alive_nodes() -> list[dict[str, float]]:
    """Each live node's total resources (``ray.nodes()``), in the current Ray session."""
    import ray

    return [dict(n.get("Resources") or {}) for n in ray.nodes() if n.get("Alive")]


def _fits(node: NodeResources, cpus: float, gpus: float) -> bool:
    return node.get("CPU", 0.0) + _EPS >= cpus and (
        gpus <= 0 or node.get("GPU", 0.0) + _EPS >= gpus
    )


def _count(value: float, unit: str) -> str:
    if value <= 0 and unit == "GPU":
        return "no GPU"
    return f"{value:g} {unit}" + ("" if value == 1 else "s")


def fit_problem(
    nodes: Iterable[NodeResources], cpus_per_trial: float, gpus_per_trial: float
) -> tuple[str, str] | None:
    """Why no node can hold one trial, and how to fix it; None when one can.

    Returns:
        ``(problem, fix)``, e.g. ``("resources.cpus_per_trial = 4 but the
        largest node has 2 CPUs", "lower cpus_per_trial to 2 or less, ...")``.
    """
    nodes = list(nodes)
    cpus, gpus = float(cpus_per_trial), float(gpus_per_trial)
    if any(_fits(n, cpus, gpus) for n in nodes):
        return None
    most_cpus = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
    most_gpus = max((n.get("GPU", 0.0) for n in nodes), default=0.0)
    larger = "or join a cluster with larger nodes (--address)"
    cpu_short = most_cpus + _EPS < cpus
    gpu_short = gpus > 0 and most_gpus + _EPS < gpus
    cpu_fix = f"lower cpus_per_trial to {most_cpus:g} or less"
    gpu_fix = (
        "set gpus_per_trial = 0 to train on CPUs"
        if most_gpus <= 0
        else f"lower gpus_per_trial to {most_gpus:g} or less (a fraction shares a GPU)"
    )
    if not nodes:
        return "the Ray cluster has no live node", "start one (ray start) or check --address"
    if cpu_short and gpu_short:
        return (
            f"resources.cpus_per_trial = {cpus:g} and gpus_per_trial = {gpus:g} but the "
            f"largest node has {_count(most_cpus, 'CPU')} and the one with most GPUs "
            f"{_count(most_gpus, 'GPU')}",
            f"{cpu_fix} and {gpu_fix}, {larger}",
        )
    if cpu_short:
        return (
            f"resources.cpus_per_trial = {cpus:g} but the largest node has "
            f"{_count(most_cpus, 'CPU')}",
            f"{cpu_fix}, {larger}",
        )
    if gpu_short:
        offer = "no node has a GPU" if most_gpus <= 0 else f"the largest node has {most_gpus:g}"
        return (
            f"resources.gpus_per_trial = {gpus:g} but {offer}",
            f"{gpu_fix}, or join a cluster with {'GPUs' if most_gpus <= 0 else 'larger GPU nodes'}"
            " (--address)",
        )
    # Enough CPUs on one node and enough GPUs on another, never both on one.
    with_gpus = max((n.get("CPU", 0.0) for n in nodes if _fits(n, 0.0, gpus)), default=0.0)
    return (
        f"resources.cpus_per_trial = {cpus:g} with gpus_per_trial = {gpus:g} but no node has "
        f"both: the nodes with {_count(gpus, 'GPU')} have at most {_count(with_gpus, 'CPU')}",
        f"lower cpus_per_trial to {with_gpus:g} or less, {larger}",
    )


def trial_slots(
    nodes: Iterable[NodeResources], cpus_per_trial: float, gpus_per_trial: float
) -> int | None:
    """How many trials the nodes hold at once, node by node (a trial never spans
    nodes); None when a trial asks for no CPU and no GPU."""
    if cpus_per_trial <= 0 and gpus_per_trial <= 0:
        return None
    total = 0
    for node in nodes:
        per_node = []
        if cpus_per_trial > 0:
            per_node.append(int((node.get("CPU", 0.0) + _EPS) // cpus_per_trial))
        if gpus_per_trial > 0:
            per_node.append(int((node.get("GPU", 0.0) + _EPS) // gpus_per_trial))
        total += min(per_node)
    return total


# -- can the cluster grow? ------------------------------------------------------


def growth_from_cluster_config(config: Any) -> Growth | None:
    """Source 1: an ``autoscaler_pb2.ClusterConfig`` (None or no node groups: unknown)."""
    if config is None or not config.node_group_configs:
        return None
    shapes = tuple(
        {key: float(value) for key, value in group.resources.items()}
        for group in config.node_group_configs
        if group.resources
        and group.max_count != 0
        and (group.max_count == -1 or group.max_count > group.min_count)
    )
    return Growth(bool(shapes), shapes, "the autoscaler's cluster config")


def growth_from_v1_status(status: Mapping[str, Any] | None) -> Growth | None:
    """Source 2: autoscaler v1's status document (None when there is none)."""
    if not status:
        return None
    report = status.get("autoscaler_report") or {}
    names = set((report.get("node_type_mapping") or {}).values())
    names |= set(report.get("active_nodes") or {})
    names |= set(report.get("pending_launches") or {})
    configured = sorted(n for n in names if not _READ_ONLY_TYPE.fullmatch(n))
    if not configured:
        return NO_GROWTH
    return Growth(True, None, f"an autoscaler manages node types {', '.join(configured)}")


def growth_from_v2_status(status: Any) -> Growth | None:
    """Source 3: autoscaler v2's ``ClusterStatus`` (None when there is none)."""
    if status is None:
        return None
    nodes = [*status.active_nodes, *status.idle_nodes, *status.pending_nodes]
    names = {n.ray_node_type_name for n in nodes}
    names |= {n.ray_node_type_name for n in status.pending_launches}
    configured = sorted(n for n in names if n and not _READ_ONLY_TYPE.fullmatch(n))
    if not configured:
        return NO_GROWTH
    return Growth(True, None, f"an autoscaler manages node types {', '.join(configured)}")


def growth_from_bootstrap(config: Mapping[str, Any] | None) -> Growth | None:
    """Source 4: the cluster launcher's config (None when there is none)."""
    if not config:
        return None
    if int(config.get("max_workers", 0) or 0) <= 0:
        return NO_GROWTH
    head = config.get("head_node_type")
    workers = [
        spec
        for name, spec in (config.get("available_node_types") or {}).items()
        if name != head and int((spec or {}).get("max_workers", config["max_workers"]) or 0) > 0
    ]
    if not workers:
        return NO_GROWTH
    shapes = [dict((spec or {}).get("resources") or {}) for spec in workers]
    known = all("CPU" in shape for shape in shapes)  # else found when the instance starts
    return Growth(
        True,
        tuple({k: float(v) for k, v in s.items()} for s in shapes) if known else None,
        f"{BOOTSTRAP_CONFIG} allows worker nodes",
    )


def _read_cluster_config() -> Any:
    return internals.ray_cluster_config()


def _read_v1_status() -> dict[str, Any] | None:
    raw = internals.ray_v1_status()
    return json.loads(raw) if raw else None


def _read_v2_status() -> Any:
    return internals.ray_v2_status()


def _read_bootstrap() -> dict[str, Any] | None:
    path = Path(BOOTSTRAP_CONFIG).expanduser()
    if not path.is_file():
        return None
    import yaml

    loaded = yaml.safe_load(path.read_text())
    return loaded if isinstance(loaded, dict) else None


SOURCES: tuple[tuple[Callable[[], Any], Callable[[Any], Growth | None]], ...] = (
    (_read_cluster_config, growth_from_cluster_config),
    (_read_v1_status, growth_from_v1_status),
    (_read_v2_status, growth_from_v2_status),
    (_read_bootstrap, growth_from_bootstrap),
)


def cluster_growth() -> Growth:
    """Whether the current Ray cluster can gain nodes (see the module docstring).

    The first source that finds an autoscaler decides; a source that cannot be
    read (another Ray version, Ray Client) is skipped; none: :data:`NO_GROWTH`.
    """
    for read, interpret in SOURCES:
        try:
            growth = interpret(read())
        except Exception:  # private API: a change in Ray must not stop a run
            logger.debug("autoscaler source %s unreadable", read.__name__, exc_info=True)
            continue
        if growth is not None and growth.can_grow:
            return growth
    return NO_GROWTH


# -- waiting ----------------------------------------------------------------------


def _placeholder() -> None:
    """Runs nowhere until a node with the trial's resources exists (autoscaler demand)."""


def request_node(cpus_per_trial: float, gpus_per_trial: float) -> Callable[[], None]:
    """Queue one no-op task with a trial's resources so an autoscaler adds a node
    that fits it (Ray's autoscalers scale on pending tasks); returns its cancel.

    A task rather than ``ray.autoscaler.sdk.request_resources``: that request
    outlives the driver and would keep the node after an interrupted run.
    """
    import ray

    task = ray.remote(num_cpus=cpus_per_trial, num_gpus=gpus_per_trial, max_retries=0)
    ref = task(_placeholder).remote()

    def cancel() -> None:
        try:
            ray.cancel(ref)
        except Exception:  # already ran: the node came
            pass

    return cancel


def wait_for_fit(
    cpus_per_trial: float,
    gpus_per_trial: float,
    *,
    on_wait: Callable[[str], None] | None = None,
    nodes: Callable[[], Sequence[NodeResources]] = alive_nodes,
    growth: Callable[[], Growth] = cluster_growth,
    demand: Callable[[float, float], Callable[[], None]] | None = request_node,
    poll: float = POLL_EVERY,
    say_every: float = SAY_EVERY,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[NodeResources]:
    """Return the live nodes once one of them can hold one trial.

    Args:
        cpus_per_trial: CPUs one trial asks Ray for.
        gpus_per_trial: GPUs one trial asks Ray for (fractions allowed).
        on_wait: Told what is missing when the wait starts and every
            ``say_every`` seconds after (default: a logged warning).
        nodes: Each live node's resources (default: this Ray session's).
        growth: Whether the cluster can grow (default: :func:`cluster_growth`).
        demand: Starts telling the autoscaler what to add; returns how to stop.
        poll: Seconds between looks at the nodes.
        say_every: Seconds between ``on_wait`` calls.
        clock: Monotonic seconds.
        sleep: Sleeps; a KeyboardInterrupt there ends the wait (Ctrl-C).

    Raises:
        ConfigError: No node can hold one trial and the cluster cannot gain
            one that can.
    """
    say = on_wait or logger.warning
    current = list(nodes())
    misfit = fit_problem(current, cpus_per_trial, gpus_per_trial)
    if misfit is None:
        return current
    problem, fix = misfit
    grows = growth()
    if not grows.can_grow:
        raise ConfigError(f"{problem} (a trial runs on one node); {fix}")
    if grows.shapes is not None and fit_problem(grows.shapes, cpus_per_trial, gpus_per_trial):
        raise ConfigError(
            f"{problem}, and no node type the autoscaler may add has room for one trial "
            f"({grows.source}); {fix}"
        )
    stop = demand(cpus_per_trial, gpus_per_trial) if demand else None
    start = clock()
    said_at: float | None = None
    try:
        while True:
            now = clock()
            if said_at is None or now - said_at >= say_every:
                waited = f" for {now - start:.0f} s" if said_at is not None else ""
                say(
                    f"{problem}; waiting{waited} for the autoscaler to add a node that can "
                    f"hold one trial ({grows.source}); Ctrl-C to stop"
                )
                said_at = now
            sleep(poll)
            current = list(nodes())
            misfit = fit_problem(current, cpus_per_trial, gpus_per_trial)
            if misfit is None:
                return current
            problem = misfit[0]  # nodes come and go: say what is missing now
    finally:
        if stop is not None:
            stop()
