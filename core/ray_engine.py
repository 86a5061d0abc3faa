"""`python -m core batch DIR --out OUT --engine ray`: the batch's workers as Ray actors.

Each actor is a core.batch.BatchWorker: it loads the models once, then analyses one file per
call; files go to whichever actor is free, and this process writes every output (core.batch).
With GPUs in the cluster each actor asks for one (`--gpus-per-job`), else for CPU cores
(`--cpus-per-job`, default 2). An actor that dies fails only the file it held and is replaced.

Where it runs: no `--address` starts a local Ray on this machine; `--address auto` joins the
cluster this machine belongs to (`ray start --head` / `ray start --address ...`); `ray://HOST:10001`
connects through Ray Client. On a cluster the project's code is shipped to the nodes (Ray's
working_dir) with this process's WORKBENCH_* settings, but each node needs the Python environment
(the pinned requirements) and must see the videos and any --checkpoint at the same absolute path
(a shared file system). Outputs are written here, by this process.

Ray is optional: requirements-ray.txt installs it.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Iterator

from .batch import BatchWorker, Outcome
from .types import UserError, error_line

ROOT = Path(__file__).resolve().parents[1]
INSTALL = "pip install -r requirements-ray.txt"
CPUS_PER_JOB = 2.0        # Whisper decodes on one thread while the face grid uses another
GPUS_PER_JOB = 1.0
ENV_PREFIX = "WORKBENCH_"   # settings passed on to the actors, wherever they run
ANSI = re.compile(r"\x1b\[[0-9;]*m")       # Ray colours its messages
LINE = 200                  # characters of a Ray error kept in a one-line message
SHIP_EXCLUDES = [".venv", ".git", "data", "runs", "out", "tests", "__pycache__", "*.pyc", ".gradio",
                 ".pytest_cache", "*.mp4", "*.wav", "*.webm", "*.mkv", "*.mov"]


class RayUnavailable(UserError):
    """Ray is not installed (or cannot be reached); one line saying what to do."""


def import_ray():
    """The ray module, or RayUnavailable saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable(f"--engine ray needs Ray, which is not installed: {INSTALL} "
                             "(or use --engine local).") from None
    return ray


def plan(resources: dict, jobs: int | None, n_files: int, cpus_per_job: float | None = None,
         gpus_per_job: float | None = None) -> tuple[int, dict]:
    """(how many actors, what each asks Ray for) given the cluster's resources: a GPU each
    (`gpus_per_job`, 1 by default) when the cluster has GPUs, else `cpus_per_job` cores each;
    as many as the cluster holds unless `jobs` says, and never more than there are files."""
    cpus = float(resources.get("CPU", 1.0))
    gpus = float(resources.get("GPU", 0.0))
    gpu_share = GPUS_PER_JOB if gpus_per_job is None else gpus_per_job
    if gpus > 0 and gpu_share > 0:
        per = {"num_gpus": gpu_share, "num_cpus": cpus_per_job or 1.0}
        fits = int(gpus // gpu_share)
    else:
        per_cpu = cpus_per_job or (max(1.0, cpus // jobs) if jobs else min(CPUS_PER_JOB, cpus))
        per = {"num_cpus": per_cpu, "num_gpus": 0}
        fits = int(cpus // per_cpu)
    for need, have, what in ((per["num_cpus"], cpus, "CPU cores"), (per["num_gpus"], gpus, "GPUs")):
        if need > have:         # an actor no node can hold would wait for ever
            raise RayUnavailable(f"Each Ray worker would ask for {need:g} {what}, and the cluster has "
                                 f"{have:g}: lower --cpus-per-job / --gpus-per-job.")
    return max(1, min(jobs or fits, max(1, n_files))), per


def _connect(ray, address: str | None) -> bool:
    """Start or join Ray unless this process already did; True when this call started it."""
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    # the same analysis as here: the workbench's settings (caches, int8, video weights) go along
    settings = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}
    if address:                 # a cluster: ship this code, not the venv, data or media
        runtime_env = {"working_dir": str(ROOT), "excludes": SHIP_EXCLUDES, "env_vars": settings}
        try:
            ray.init(address=address, runtime_env=runtime_env, **quiet)
        except ConnectionError as err:
            hint = ("; if the cluster asks for a token (Ray's default), set RAY_AUTH_MODE=token and give "
                    "the token in RAY_AUTH_TOKEN or ~/.ray/auth_token"
                    if address.startswith("ray://") and os.environ.get("RAY_AUTH_MODE") != "token" else "")
            raise RayUnavailable(f"Could not reach the Ray cluster at {address}: {error_line(err)}{hint}") from None
    else:                       # this machine: workers import the project from where it lies
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        ray.init(include_dashboard=False, runtime_env={"env_vars": {**settings, "PYTHONPATH": path}}, **quiet)
    return True


class RayEngine:
    """BatchWorkers as Ray actors; nothing starts until the first signature() or run()."""

    def __init__(self, jobs: int | None, checkpoint: str | None, n_files: int, address: str | None = None,
                 cpus_per_job: float | None = None, gpus_per_job: float | None = None,
                 dialogue: bool = True):
        self.ray = import_ray()
        self.dialogue = dialogue
        self.jobs, self.n_files, self.address = jobs, n_files, address
        self.checkpoint = str(Path(checkpoint).resolve()) if checkpoint else None
        self.cpus_per_job, self.gpus_per_job = cpus_per_job, gpus_per_job
        self.started = self.started_ray = False      # actors asked for; Ray started by this engine
        self.options: dict = {}
        self.idle: list = []            # actors whose models are loaded and that hold no file
        self.starting: dict = {}        # signature() call -> actor still loading its models
        self.restarts_left = 0
        self._signature: dict | None = None
        self.why_down = ""              # the last reason an actor could not start

    def _start(self) -> None:
        if self.started:
            return
        self.started_ray = _connect(self.ray, self.address) or self.started_ray
        self.started = True
        n, self.options = plan(self.ray.cluster_resources(), self.jobs, self.n_files,
                               self.cpus_per_job, self.gpus_per_job)
        self.restarts_left = n
        for _ in range(n):
            self._spawn()

    def _spawn(self) -> None:
        threads = max(1, int(self.options.get("num_cpus") or 1))
        actor = self.ray.remote(BatchWorker).options(**self.options).remote(self.checkpoint, threads, self.dialogue)
        self.starting[actor.signature.remote()] = actor

    def _actor_ready(self, ref) -> bool:
        """Collect one finished signature() call: the actor joins the idle ones, or is replaced."""
        actor = self.starting.pop(ref)
        try:
            signature = self.ray.get(ref)
        except self.ray.exceptions.RayError as err:
            self.why_down = _ray_error_line(err)
            self._replace(actor)
            return False
        if self._signature is None:
            self._signature = signature
        self.idle.append(actor)
        return True

    def _replace(self, actor) -> None:
        self.ray.kill(actor, no_restart=True)
        if self.restarts_left > 0:
            self.restarts_left -= 1
            self._spawn()

    def signature(self) -> dict | None:
        """The models' signature, from the first actor that has loaded them."""
        self._start()
        while self._signature is None and not self.idle and self.starting:
            ready, _ = self.ray.wait(list(self.starting), num_returns=1)
            self._actor_ready(ready[0])
        if self._signature is None and not self.idle:
            raise RayUnavailable(f"No Ray worker could load the models: {self.why_down}")
        return self._signature

    def run(self, paths: list[str]) -> Iterator[Outcome]:
        """Hand each file to the next free actor and yield results as they come back."""
        self._start()
        queue = list(reversed(paths))
        working: dict = {}              # run() call -> (actor, path)
        while queue or working:
            while queue and self.idle:
                actor, path = self.idle.pop(), queue.pop()
                working[actor.run.remote(path)] = (actor, path)
            if not working and not self.starting:       # every actor is gone: fail the rest by name
                reason = self.why_down or "no Ray worker is running"
                yield from (Outcome(p, None, f"No Ray worker could analyse it: {reason}") for p in reversed(queue))
                return
            ready, _ = self.ray.wait([*working, *self.starting], num_returns=1)
            if ready[0] in self.starting:
                self._actor_ready(ready[0])
                continue
            actor, path = working.pop(ready[0])
            try:
                outcome = self.ray.get(ready[0])
            except self.ray.exceptions.RayActorError as err:   # the actor died (memory, node lost)
                self.why_down = _ray_error_line(err)
                yield Outcome(path, None, f"The Ray worker stopped while analysing it: {self.why_down}")
                self._replace(actor)
                continue
            except self.ray.exceptions.RayError as err:
                outcome = Outcome(path, None, f"Ray could not run it: {_ray_error_line(err)}")
            self.idle.append(actor)
            yield outcome

    def close(self) -> None:
        for actor in [*self.idle, *self.starting.values()]:
            self.ray.kill(actor, no_restart=True)
        self.idle, self.starting, self.started = [], {}, False
        if self.started_ray:
            self.ray.shutdown()
            self.started_ray = False


def _ray_error_line(err: BaseException) -> str:
    """One line out of Ray's many: the cause's own message when Ray wraps one (a task's
    exception, or the last line of an actor's failed __init__), else Ray's first line."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException) and str(cause).strip():
        return f"{type(cause).__name__}: {error_line(cause)}"
    lines = [line for raw in str(err).splitlines() if (line := ANSI.sub("", raw).strip())]
    if not lines:
        return type(err).__name__
    if "creation task" in lines[0]:             # the actor's __init__ raised: its error ends the text
        return f"it could not start: {lines[-1][:LINE]}"
    return lines[0][:LINE]
