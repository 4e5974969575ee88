"""Where ``medclip manifest`` and ``medclip prepare`` run their per-file work: this machine, or a Dask cluster.

An executor maps a picklable function over a list of tasks and yields the results **in task order**, so what a
command writes never depends on where or in which order the tasks ran:

- ``local``: this process (``workers <= 1``) or a pool of ``workers`` processes on this machine (the default, as
  simple as before: nothing to start).
- ``dask``: a Dask distributed cluster. ``scheduler="tcp://HOST:8786"`` connects to a running one (``dask scheduler``
  + ``dask worker`` on each machine, or dask-jobqueue / dask-kubernetes); without it a ``LocalCluster`` of
  ``workers`` single-threaded worker processes starts for the run and stops after it.

On Dask a task whose worker dies (killed, out of memory, a lost machine) is run again on another worker by the
scheduler, and ``retries`` covers a task that raised; the functions mapped here never raise on bad input (they return
a reject), so a retry only ever repeats lost work and the results are the same. At most ``window`` tasks are in
flight and each result is released once yielded, so the driver holds a bounded number of results, whatever the
number of tasks.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from medclip.errors import InputError, SetupError

logger = logging.getLogger(__name__)

EXECUTORS = ("local", "dask")


class Executor:
    """``map(fn, tasks)`` -> results in task order; a context manager (``close`` releases workers)."""

    name = "local"
    workers = 1

    def map(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> dict:
        return {"executor": self.name, "workers": self.workers}


class LocalExecutor(Executor):
    """This process (``workers <= 1``) or a process pool on this machine."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = max(1, int(workers))
        self._pool: ProcessPoolExecutor | None = None

    def map(self, fn, tasks):
        tasks = list(tasks)
        if self.workers <= 1 or len(tasks) < 2:
            yield from map(fn, tasks)
            return
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers)
        yield from self._pool.map(fn, tasks, chunksize=max(1, min(16, len(tasks) // (4 * self.workers))))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


class DaskExecutor(Executor):
    """Tasks on a Dask distributed cluster (``scheduler`` address) or on a LocalCluster started for the run."""

    name = "dask"

    def __init__(self, scheduler: str = "", workers: int = 0, *, retries: int = 3, window: int = 0) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:  # a dependency; only a broken environment lacks it
            raise SetupError("--executor dask needs dask.distributed: pip install 'dask[distributed]'") from exc
        self.retries = retries
        self._cluster = None
        if scheduler:
            try:
                self._client = Client(scheduler)  # waits distributed.comm.timeouts.connect (Dask's config, 30 s)
            except (OSError, TimeoutError) as exc:
                raise InputError(
                    f"--scheduler {scheduler}: no Dask scheduler answers there ({type(exc).__name__}); start one with "
                    "`dask scheduler` and workers with `dask worker tcp://HOST:8786`"
                ) from None
        else:
            n = workers or os.cpu_count() or 1
            # One thread per worker process: the tasks decode images (numpy / torch hold the GIL in between).
            self._cluster = LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
            )
            self._client = Client(self._cluster)
        self.scheduler = self._client.scheduler.address
        self.workers = len(self._client.scheduler_info().get("workers", {})) or workers
        self.window = window or max(8, 4 * max(1, self.workers))
        logger.info("dask: %s with %d workers", "a LocalCluster" if self._cluster else scheduler, self.workers)

    @property
    def client(self):
        return self._client

    def map(self, fn, tasks):
        pending: deque = deque()
        it = iter(tasks)
        n, token = 0, uuid.uuid4().hex[:8]

        def submit(task) -> None:
            nonlocal n
            # pure=False: a task is never merged with an equal-looking one; the key names the task for the dashboard
            pending.append(
                self._client.submit(fn, task, pure=False, retries=self.retries, key=f"{_name(fn)}-{token}-{n}")
            )
            n += 1

        for task in it:
            submit(task)
            if len(pending) >= self.window:
                break
        while pending:
            future = pending.popleft()
            result = future.result()
            future.release()
            for task in it:
                submit(task)
                break
            yield result

    def close(self) -> None:
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()

    def describe(self) -> dict:
        where = "LocalCluster" if self._cluster is not None else "scheduler"
        return {"executor": self.name, "workers": self.workers, "cluster": where}


def _name(fn: Callable) -> str:
    return getattr(fn, "__name__", "task").strip("_") or "task"


def make_executor(name: str = "local", *, scheduler: str = "", workers: int = 0) -> Executor:
    """``local`` (``workers`` processes, 0 -> every core) or ``dask`` (``scheduler`` or a LocalCluster)."""
    name = (name or "local").strip().lower()
    if name not in EXECUTORS:
        raise InputError(f"--executor {name!r}: use one of {', '.join(EXECUTORS)}")
    if scheduler and name != "dask":
        raise InputError("--scheduler needs --executor dask")
    if name == "dask":
        return DaskExecutor(scheduler, workers)
    return LocalExecutor(workers or os.cpu_count() or 1)
