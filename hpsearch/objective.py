"""The objective: the one seam between the search and the code that trains.

Three kinds, chosen by the study file's ``[objective]`` table:

* the **built-in MLP** (no ``[objective]``): :func:`hpsearch.worker.run_trial`
  trains :func:`trainer.train.train`; only it can pack several trials into one
  stacked computation (:func:`hpsearch.worker.run_pack`).
* a **function**, ``function = "my_model:train"``: the module is imported with
  the study file's folder on ``sys.path`` and called as ``train(params, trial)``
  in a Ray worker. ``params`` holds the sampled parameters and the ``[params]``
  constants; ``trial`` is a :class:`Trial` (Optuna's names: ``number``,
  ``report``, ``should_prune``; plus ``seed`` and ``params``). It returns the
  study's metric as a float, or a dict holding it; raising
  :class:`TrialPruned` (or ``optuna.TrialPruned``) ends the trial as PRUNED.
* a **command**, ``command = ["python", "train.py"]``: run in the study file's
  folder with the parameters appended as ``--name=value`` (booleans as
  ``true``/``false``) and ``HPSEARCH_TRIAL_NUMBER``, ``HPSEARCH_SEED`` in its
  environment. Each JSON object printed on a line of stdout
  (``{"step": 3, "val_accuracy": 0.91}``) is a curve point and, when it holds
  the study's metric, a pruning report; the metric's last value is the
  trial's. A pruned command gets SIGTERM, then SIGKILL after
  ``kill_grace`` seconds (its whole process group). A program named
  ``python`` or ``python3`` runs with the worker's own interpreter.

Outcomes, the same for every kind: an exception (or a non-zero exit) makes
the trial FAIL with the exception's last line (or the exit code and the last
stderr line) as its reason, and the study goes on; a missing or non-finite
metric is FAIL with the reason. The last :data:`TAIL_LINES` lines of a
command's stdout and stderr are kept with a failed trial.

Curves are generic: each reported point is ``{"step": s, name: value, ...}``
and is recorded as the trial's ``curve`` attribute, column-wise
(:func:`curve_columns`); the study metric at each step is the trial's
intermediate value, which the pruners watch.

Driver side, :func:`check_objective` fails before anything is written when the
module does not import, the callable is missing or the command is not
executable; :func:`pack_folder` ships the study file's folder to every Ray
node through the object store (at most :data:`MAX_FOLDER_BYTES`), where
:func:`unpack_folder` unpacks it once: a function is imported from there and a
command runs there (its current directory), on every node alike.

This module imports neither Optuna nor Ray at the top: workers import it.
"""

from __future__ import annotations

import collections
import hashlib
import importlib
import io
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TAIL_LINES = 20
"""Lines of a command's stdout and stderr kept with a failed trial."""
MAX_FOLDER_BYTES = 50 * 2**20
"""Largest study folder shipped to Ray workers."""
FOLDER_EXCLUDES = (".git", ".venv", "venv", "__pycache__", "*.db", "*.db-journal", "reports")
"""Left out of the study folder shipped to workers (and of its size)."""
PYTHON_NAMES = ("python", "python3")
"""Command programs run with the worker's own interpreter (``sys.executable``)."""

Reporter = Callable[[int, int, float], bool]
"""``report(trial_number, step, value) -> stop?``: the pruning oracle's answer."""


class TrialPruned(Exception):
    """Raise in an objective to stop its trial as PRUNED (as ``optuna.TrialPruned``)."""


def _is_pruned(exc: BaseException) -> bool:
    """``hpsearch.TrialPruned``, ``optuna.TrialPruned`` (or a subclass of either);
    Optuna is not imported for the check."""
    return any(c.__name__ == "TrialPruned" for c in type(exc).__mro__)


@dataclass(frozen=True)
class UserCode:
    """What a worker needs to run a trial of a user's objective (picklable).

    Attributes:
        kind: ``function`` or ``command``.
        target: ``module:callable``, or the command's argv.
        metric: The study's metric name.
        constants: The ``[params]`` table.
        folder: The study file's folder as the driver sees it.
        kill_grace: Seconds between SIGTERM and SIGKILL of a pruned command.
    """

    kind: str
    target: str | tuple[str, ...]
    metric: str
    constants: Mapping[str, Any] = field(default_factory=dict)
    folder: str = ""
    kill_grace: float = 5.0

    @classmethod
    def of(cls, config: Any) -> UserCode | None:
        """The user's code of a :class:`~hpsearch.config.StudyConfig` (None: built-in)."""
        objective = config.objective
        if objective.kind == "builtin":
            return None
        return cls(
            kind=objective.kind,
            target=objective.function if objective.kind == "function" else objective.command,
            metric=config.metric,
            constants=dict(config.params),
            folder=config.folder,
            kill_grace=objective.kill_grace,
        )


class Trial:
    """The trial a function objective receives (Optuna's names where they exist).

    Attributes:
        number: The trial's number in the study (0-based).
        seed: The trial's recorded seed, derived from the study seed and the
            number: seed your own generators with it.
        params: The sampled parameters and constants (the same dict as the
            objective's first argument).
    """

    def __init__(
        self,
        number: int,
        seed: int,
        params: dict[str, Any],
        metric: str,
        reporter: Reporter | None = None,
    ) -> None:
        self.number = number
        self.seed = seed
        self.params = params
        self._metric = metric
        self._reporter = reporter
        self._prune = False
        self.points: list[dict[str, Any]] = []

    def report(self, value: float, step: int, **metrics: float) -> None:
        """Record the study's metric ``value`` at ``step`` (and more metrics by
        keyword, e.g. ``train_loss=0.2``) as a curve point, and tell the pruner.

        Raises:
            TypeError: ``step`` is not a non-negative integer, or a value is
                not a number.
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise TypeError(f"trial.report: step must be an integer >= 0, got {step!r}")
        point: dict[str, Any] = {"step": step, self._metric: _number("value", value)}
        point.update({k: _number(k, v) for k, v in metrics.items()})
        self.points.append(point)
        if self._reporter is not None and math.isfinite(point[self._metric]):
            self._prune = bool(self._reporter(self.number, step, point[self._metric]))

    def should_prune(self) -> bool:
        """True when the pruner says to stop after the last report; then raise
        :class:`TrialPruned` (or ``optuna.TrialPruned``)."""
        return self._prune

    def __repr__(self) -> str:
        return f"Trial(number={self.number}, seed={self.seed}, params={self.params!r})"


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:  # numpy and torch scalars
            return float(value)
        except (TypeError, ValueError):
            raise TypeError(f"trial.report: {name} must be a number, got {value!r}") from None
    return float(value)


def curve_columns(points: list[dict[str, Any]]) -> dict[str, list[float | None]]:
    """Reported points as columns: ``{"step": [...], name: [...], ...}`` (None
    where a point lacks a metric, or its value is not finite)."""
    names: list[str] = []
    for point in points:
        names.extend(k for k in point if k not in names)
    if "step" in names:
        names.remove("step")
    out: dict[str, list[float | None]] = {"step": [p.get("step") for p in points]}
    for name in names:
        column = []
        for p in points:
            v = p.get(name)
            column.append(float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None)
        out[name] = column
    return out


def metric_steps(points: list[dict[str, Any]], metric: str) -> dict[int, float]:
    """The study metric per step (the last report of a step wins), for the pruner."""
    steps: dict[int, float] = {}
    for point in points:
        value = point.get(metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            steps[int(point["step"])] = float(value)
    return steps


# --------------------------------------------------------------------------- worker side


def run_user_trial(
    task: Any, code: UserCode, *, node: str | None = None, reporter: Reporter | None = None
) -> Any:
    """Run one trial of a user's objective; its :class:`~hpsearch.worker.TrialOutcome`.

    Never raises: whatever the objective does is a COMPLETE, PRUNED or FAIL outcome.
    """
    node = node or socket.gethostname()
    params = {**code.constants, **task.params}
    start = time.perf_counter()
    if code.kind == "function":
        result = _run_function(task, code, params, reporter)
    else:
        result = _run_command(task, code, params, reporter)
    return _outcome(task, code, result, node, time.perf_counter() - start)


@dataclass
class _Result:
    points: list[dict[str, Any]]
    state: str  # COMPLETE (value to check), PRUNED or FAIL
    value: Any = None
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _outcome(task: Any, code: UserCode, result: _Result, node: str, seconds: float) -> Any:
    from hpsearch.worker import TrialOutcome

    history: dict[str, Any] = {
        "points": result.points,
        "stopped": result.state == "PRUNED",
        **result.extra,
    }
    common = dict(
        number=task.number,
        trial_id=task.trial_id,
        round=task.round,
        seed=task.seed,
        params=task.params,
        node=node,
        backend=code.kind,
        retries=task.attempt,
        history=history,
        train_seconds=seconds,
    )
    metric = code.metric
    if result.state == "PRUNED":
        last = metric_steps(result.points, metric)
        value = last[max(last)] if last else None
        if value is not None and not math.isfinite(value):
            value = None
        return TrialOutcome(**common, state="PRUNED", value=value)
    if result.state == "FAIL":
        return TrialOutcome(**common, state="FAIL", value=None, fail_reason=result.reason)
    value, reason = _metric_of(result.value, metric, code.kind)
    if reason is not None:
        return TrialOutcome(**common, state="FAIL", value=None, fail_reason=reason)
    return TrialOutcome(**common, state="COMPLETE", value=value)


def _metric_of(returned: Any, metric: str, kind: str) -> tuple[float | None, str | None]:
    """The trial's value from what the objective gave back, or why it has none."""
    if kind == "function" and isinstance(returned, Mapping):
        if metric not in returned:
            keys = ", ".join(map(str, returned)) or "none"
            return None, f"metric {metric} missing: the objective returned a dict with {keys}"
        returned = returned[metric]
    if returned is None:
        if kind == "command":
            return None, f"metric {metric} missing: no JSON line on stdout held it"
        return None, (
            f"metric {metric} missing: the objective returned None; return the metric "
            "as a float or a dict holding it"
        )
    try:
        value = float(returned)
    except (TypeError, ValueError):
        return None, f"metric {metric} is not a number: {returned!r}"[:500]
    if not math.isfinite(value):
        return None, f"metric {metric} is {value}"
    return value, None


_functions: dict[tuple[str, str], Callable[..., Any]] = {}
"""Per worker process: the objective functions imported so far."""
_folders: set[str] = set()
"""Per worker process: the study folders (real paths + separator) imported from."""


def _with_path(folder: str, module_name: str) -> None:
    """The study folder first on ``sys.path`` (when it exists here), and no module
    of ``module_name``'s package left from another folder (a worker process runs
    the trials of one study after another's: ``obj`` must be this study's)."""
    if not folder or not os.path.isdir(folder):
        return
    if folder in sys.path:
        sys.path.remove(folder)
    sys.path.insert(0, folder)
    top = module_name.split(".")[0]
    root = os.path.realpath(folder) + os.sep
    _folders.add(root)
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        file = getattr(sys.modules[name], "__file__", None)
        if file and not os.path.realpath(file).startswith(root) and _is_under_a_study(file):
            del sys.modules[name]


def _is_under_a_study(file: str) -> bool:
    """True for a module imported from a study folder this process loaded before
    (never for installed packages, which are shared)."""
    real = os.path.realpath(file)
    return any(real.startswith(f) for f in _folders)


def load_function(target: str, folder: str) -> Callable[..., Any]:
    """Import ``module:callable`` with ``folder`` on ``sys.path`` (cached per process).

    Raises:
        ImportError, AttributeError, TypeError: as the import or lookup fails.
    """
    key = (folder, target)
    fn = _functions.get(key)
    if fn is None:
        module_name, _, attr = target.partition(":")
        _with_path(folder, module_name)
        module = importlib.import_module(module_name)
        fn = module
        for part in attr.split("."):
            fn = getattr(fn, part)
        if not callable(fn):
            raise TypeError(f"{target} is a {type(fn).__name__}, not callable")
        _functions[key] = fn
    return fn


def _last_line(exc: BaseException) -> str:
    return traceback.format_exception_only(type(exc), exc)[-1].strip()


def _run_function(
    task: Any, code: UserCode, params: dict[str, Any], reporter: Reporter | None
) -> _Result:
    trial = Trial(task.number, task.seed, params, code.metric, reporter)
    try:
        fn = load_function(str(code.target), code.folder)
        returned = fn(params, trial)
    except BaseException as exc:  # the objective's exception is the trial's, never the worker's
        if _is_pruned(exc):
            return _Result(trial.points, "PRUNED")
        if isinstance(exc, KeyboardInterrupt):
            raise
        return _Result(trial.points, "FAIL", reason=f"error: {_last_line(exc)}"[:500])
    extra = {}
    if isinstance(returned, Mapping):
        extra["returned"] = {
            str(k): float(v)
            for k, v in returned.items()
            if isinstance(v, (int, float)) and math.isfinite(float(v))
        }
    return _Result(trial.points, "COMPLETE", value=returned, extra=extra)


def command_argv(command: tuple[str, ...] | list[str], params: Mapping[str, Any]) -> list[str]:
    """The command with the parameters appended as ``--name=value``."""
    argv = list(command)
    if argv and argv[0] in PYTHON_NAMES:
        argv[0] = sys.executable
    for name, value in params.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            text = ",".join(map(str, value))
        else:
            text = str(value)
        argv.append(f"--{name}={text}")
    return argv


def _run_command(
    task: Any, code: UserCode, params: dict[str, Any], reporter: Reporter | None
) -> _Result:
    argv = command_argv(tuple(code.target), params)
    env = {
        **os.environ,
        "HPSEARCH_TRIAL_NUMBER": str(task.number),
        "HPSEARCH_SEED": str(task.seed),
        "PYTHONUNBUFFERED": "1",
    }
    cwd = code.folder if code.folder and os.path.isdir(code.folder) else None
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            bufsize=1,
            start_new_session=True,  # its own process group: pruning stops its children too
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    except OSError as exc:
        return _Result([], "FAIL", reason=f"error: cannot run {argv[0]}: {exc.strerror or exc}")
    err_tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    reader = threading.Thread(target=_drain, args=(proc.stderr, err_tail), daemon=True)
    reader.start()
    out_tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    points: list[dict[str, Any]] = []
    value: Any = None
    pruned = False
    reports = 0
    assert proc.stdout is not None
    for line in proc.stdout:
        out_tail.append(line.rstrip("\n"))
        point = _json_point(line)
        if point is None:
            continue
        if code.metric in point:
            reports += 1
        point.setdefault("step", reports if code.metric in point else len(points) + 1)
        points.append(point)
        if code.metric not in point:
            continue
        value = point[code.metric]
        if (
            reporter is not None
            and isinstance(value, (int, float))
            and math.isfinite(value)
            and reporter(task.number, int(point["step"]), float(value))
        ):
            pruned = True
            _stop(proc, code.kill_grace)
            break
    proc.stdout.close()
    code_ = proc.wait()
    reader.join(timeout=5.0)
    tails = {"stdout_tail": "\n".join(out_tail), "stderr_tail": "\n".join(err_tail)}
    if pruned:
        return _Result(points, "PRUNED")
    if code_ != 0:
        why = f"killed by signal {-code_}" if code_ < 0 else f"exit code {code_}"
        last = next((x for x in reversed(err_tail) if x.strip()), "")
        reason = f"command failed ({why})" + (f": {last.strip()}" if last else "")
        return _Result(points, "FAIL", reason=reason[:500], extra=tails)
    result = _Result(points, "COMPLETE", value=value)
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        result.extra = tails
    return result


def _die_with_parent() -> None:
    """In the command's process (Linux): SIGTERM when the worker that started it dies,
    e.g. when a second Ctrl-C cancels the running trials (Ray kills the workers)."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (AttributeError, OSError):  # pragma: no cover - no prctl: best effort
        pass


def _json_point(line: str) -> dict[str, Any] | None:
    """A JSON object on one line with a valid step, else None (other output is ignored)."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    step = data.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
        data.pop("step")
    return data


def _drain(stream: Any, tail: collections.deque[str]) -> None:
    for line in stream:
        tail.append(line.rstrip("\n"))
    stream.close()


def _stop(proc: subprocess.Popen[str], grace: float) -> None:
    """SIGTERM to the command's process group, SIGKILL after ``grace`` seconds."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


# --------------------------------------------------------------------------- driver side


def check_objective(config: Any) -> None:
    """Before anything runs or is written: the user's objective must be usable.

    A function's module must import (with the study folder on ``sys.path``) and
    hold the callable; a command's program must be an executable file (a
    path, relative to the study folder, or a name on ``PATH``); the study
    folder must fit :data:`MAX_FOLDER_BYTES`.

    Raises:
        ConfigError: One line naming ``objective.function`` or
            ``objective.command``, the value and what is wrong.
    """
    from hpsearch.errors import ConfigError

    code = UserCode.of(config)
    if code is None:
        return
    folder = config.folder or os.getcwd()
    if code.kind == "function":
        target = str(code.target)
        module_name = target.partition(":")[0]
        try:
            load_function(target, folder)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                raise ConfigError(
                    f"objective.function: got {target!r}; no module {module_name!r} in "
                    f"{folder} (nor on sys.path)"
                ) from exc
            raise ConfigError(
                f"objective.function: got {target!r}; importing {module_name} failed: "
                f"{_last_line(exc)}"
            ) from exc
        except AttributeError as exc:
            raise ConfigError(
                f"objective.function: got {target!r}; module {module_name} has no "
                f"{target.partition(':')[2]!r}"
            ) from exc
        except Exception as exc:
            raise ConfigError(
                f"objective.function: got {target!r}; importing {module_name} failed: "
                f"{_last_line(exc)}"
            ) from exc
    else:
        program = code.target[0]
        if program not in PYTHON_NAMES and not _executable(program, folder):
            raise ConfigError(
                f"objective.command: got {program!r}; not an executable file "
                + (f"in {folder}" if os.sep in program else "on PATH")
                + " (check the name, or chmod +x it)"
            )
    folder_size(folder)


def _executable(program: str, folder: str) -> bool:
    if os.sep in program:
        path = Path(folder, program) if not os.path.isabs(program) else Path(program)
        return path.is_file() and os.access(path, os.X_OK)
    return shutil.which(program) is not None


def _excluded(path: Path) -> bool:
    return any(path.match(pattern) for pattern in FOLDER_EXCLUDES)


def folder_size(folder: str) -> int:
    """Bytes of the study folder Ray ships to workers (without :data:`FOLDER_EXCLUDES`).

    Raises:
        ConfigError: Past :data:`MAX_FOLDER_BYTES`, naming the largest entries.
    """
    from hpsearch.errors import ConfigError

    total = 0
    sizes: dict[str, int] = {}
    root = Path(folder)
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not _excluded(here / d)]
        for name in filenames:
            path = here / name
            if _excluded(path) or path.is_symlink():
                continue
            try:
                size = path.stat().st_size
            except OSError:
                continue
            total += size
            top = path.relative_to(root).parts[0]
            sizes[top] = sizes.get(top, 0) + size
    if total > MAX_FOLDER_BYTES:
        largest = sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
        shown = ", ".join(f"{k} ({v / 2**20:.1f} MB)" for k, v in largest)
        raise ConfigError(
            f"objective: the study folder {folder} holds {total / 2**20:.1f} MB, more than the "
            f"{MAX_FOLDER_BYTES // 2**20} MB shipped to every Ray worker (largest: {shown}); "
            "move the study file and its code to a folder of their own, with the data read "
            "from a path or URL"
        )
    return total


def pack_folder(folder: str) -> tuple[str, bytes]:
    """The study folder as a zip archive (without :data:`FOLDER_EXCLUDES`) and
    its digest: what every worker unpacks (:func:`unpack_folder`).

    Raises:
        ConfigError: Past :data:`MAX_FOLDER_BYTES` (see :func:`folder_size`).
    """
    folder_size(folder)
    buffer = io.BytesIO()
    digest = hashlib.sha256()
    root = Path(folder)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            dirnames[:] = sorted(d for d in dirnames if not _excluded(here / d))
            for name in sorted(filenames):
                path = here / name
                if _excluded(path) or path.is_symlink():
                    continue
                arcname = path.relative_to(root).as_posix()
                data = path.read_bytes()
                digest.update(arcname.encode() + b"\0" + data)
                info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = (path.stat().st_mode & 0o777) << 16
                archive.writestr(info, data, zipfile.ZIP_DEFLATED)
    return digest.hexdigest()[:16], buffer.getvalue()


def unpack_folder(digest: str, archive: Callable[[], bytes]) -> str:
    """Where this node holds the study folder of ``digest``: unpacked once per node
    (under the temporary directory) from ``archive()``, then reused."""
    import tempfile

    target = Path(tempfile.gettempdir(), "hpsearch-code", digest)
    if target.is_dir():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f"{digest}-", dir=target.parent))
    with zipfile.ZipFile(io.BytesIO(archive())) as zipped:
        for info in zipped.infolist():
            zipped.extract(info, partial)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(partial / info.filename, mode)
    try:
        partial.rename(target)  # atomic: another worker of this node may have won
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
    return str(target)
