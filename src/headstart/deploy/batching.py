"""Dynamic batching: the items of concurrent requests run as one call of a prediction function.

A ``Batcher`` owns one thread. Requests hand it their items (``submit`` from any thread, ``run`` from
asyncio code); the thread takes the first waiting request, then collects more for up to
``max_wait_ms`` or until ``max_batch`` items, and calls ``predict(items)`` once for all of them
(torch releases the GIL during the forward pass, so the event loop keeps accepting requests). Each
request gets back the results of its own items, in order. A request larger than ``max_batch`` runs
as a batch of its own; requests are never split.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

Predict = Callable[[list[Any]], Sequence[Any]]  # items -> one result per item, in order


@dataclass
class _Job:
    items: list[Any]
    future: Future = field(default_factory=Future)


@dataclass
class BatchStats:
    """What the batcher did so far: calls of ``predict``, items, the largest batch."""

    batches: int = 0
    items: int = 0
    largest: int = 0
    failed: int = 0  # calls of ``predict`` that raised

    def to_dict(self) -> dict[str, Any]:
        mean = self.items / self.batches if self.batches else 0.0
        return {"batches": self.batches, "items": self.items, "largest_batch": self.largest,
                "mean_batch": round(mean, 2), "failed_batches": self.failed}


class Batcher:
    """Collect the items of concurrent requests into batches and run ``predict`` on them in one thread.

    ``predict(items)`` must return one result per item, in order. When it raises on a batch that holds
    several requests, each request is run again alone, so that one bad request fails by itself.
    """

    def __init__(self, predict: Predict, max_batch: int = 32, max_wait_ms: float = 5.0,
                 name: str = "headstart-batcher") -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, found {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be 0 or more, found {max_wait_ms}")
        self.predict, self.max_batch, self.max_wait = predict, max_batch, max_wait_ms / 1000
        self.stats = BatchStats()
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, items: Sequence[Any]) -> Future:
        """A future of the results of ``items`` (cancel it to drop a request that has not started yet)."""
        if not self._thread.is_alive():
            raise RuntimeError("the batcher is stopped")
        job = _Job(list(items))
        self._queue.put(job)
        return job.future

    async def run(self, items: Sequence[Any], timeout: float | None = None) -> list[Any]:
        """The results of ``items``; ``TimeoutError`` after ``timeout`` seconds (the request is then dropped)."""
        future = self.submit(items)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except (TimeoutError, asyncio.TimeoutError):
            future.cancel()
            raise TimeoutError(f"no answer within {timeout} s") from None

    def close(self, timeout: float = 10.0) -> None:
        """Finish the requests already queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    # ------------------------------------------------------------------ the batching thread
    def _loop(self) -> None:
        carried: _Job | None = None
        while True:
            first = carried if carried is not None else self._queue.get()
            carried = None
            if first is None:
                return
            jobs, count, stop = [first], len(first.items), False
            deadline = time.monotonic() + self.max_wait
            while count < self.max_batch:
                try:
                    job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                if count + len(job.items) > self.max_batch:
                    carried = job  # starts the next batch
                    break
                jobs.append(job)
                count += len(job.items)
            self._run([j for j in jobs if j.future.set_running_or_notify_cancel()])
            if stop:
                if carried is not None and carried.future.set_running_or_notify_cancel():
                    self._run([carried])
                self._drain()
                return

    def _drain(self) -> None:
        """Run what is still queued after ``close`` (one request at a time)."""
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None and job.future.set_running_or_notify_cancel():
                self._run([job])

    def _run(self, jobs: list[_Job]) -> None:
        if not jobs:
            return
        items = [item for job in jobs for item in job.items]
        try:
            results = list(self.predict(items))
            if len(results) != len(items):
                raise RuntimeError(f"predict returned {len(results)} results for {len(items)} items")
        except Exception as exc:  # noqa: BLE001 - handed to the request that caused it
            self.stats.failed += 1
            if len(jobs) > 1:  # find the request that fails: run each alone
                for job in jobs:
                    self._run([job])
            else:
                jobs[0].future.set_exception(exc)
            return
        self.stats.batches += 1
        self.stats.items += len(items)
        self.stats.largest = max(self.stats.largest, len(items))
        start = 0
        for job in jobs:
            job.future.set_result(results[start:start + len(job.items)])
            start += len(job.items)
