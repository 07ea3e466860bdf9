"""Micro-batching: requests for the same function that arrive within a few
milliseconds of each other go through the model as one batch.

The first request of a batch waits at most ``max_wait`` seconds for others
(requests already queued join at once, without waiting), and only while
``expecting()`` says more requests are on their way (read, not yet queued) or the
previous batch held several (the clients it just answered are about to send
again): a lone request on a quiet server does not wait for company that is not
coming. A batch holds at
most ``max_batch`` items. The batch runs in a worker thread, never on the event
loop, and while it runs the next requests gather in the queue, so a busy server
makes larger batches by itself. The queue is bounded: beyond ``max_queue``
waiting requests, :class:`Overloaded` is raised at once (the app answers 503).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any


class Overloaded(Exception):
    """The batcher's queue is full."""


class MicroBatcher:
    """Gathers items for ``run(items) -> results`` (one result per item, in order).

    Created on the event loop that serves the requests; ``run`` goes to ``executor``.
    A result that is an exception is raised to that item's caller only.
    """

    def __init__(
        self,
        run: Callable[[Sequence[Any]], Sequence[Any]],
        *,
        executor: Executor | None = None,
        max_batch: int = 32,
        max_wait: float = 0.005,
        max_queue: int = 1024,
        expecting: Callable[[], int] | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait < 0:
            raise ValueError("max_batch and max_queue must be at least 1, max_wait at least 0")
        self.run = run
        self.executor = executor
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait)
        self.expecting = expecting
        self.queue: asyncio.Queue[tuple[Any, asyncio.Future[Any]]] = asyncio.Queue(maxsize=int(max_queue))
        self.batches = 0
        self.items = 0
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: Any) -> Any:
        """The result for ``item``, once its batch has run."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._worker())
        fut: asyncio.Future[Any] = loop.create_future()
        try:
            self.queue.put_nowait((item, fut))
        except asyncio.QueueFull:
            raise Overloaded(f"{self.queue.maxsize} requests are already waiting") from None
        return await fut

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        last = 0  # size of the previous batch: a busy server waits for the clients it just answered
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                left = deadline - loop.time()
                if left <= 0 or (self.expecting is not None and not self.expecting() and last <= 1):
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except asyncio.TimeoutError:
                    break
            # Callers that went away (client disconnected) need no work.
            batch = [(item, fut) for item, fut in batch if not fut.done()]
            if not batch:
                continue
            self.batches += 1
            self.items += len(batch)
            last = len(batch)
            try:
                results = await loop.run_in_executor(self.executor, self.run, [item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"internal error: {len(results)} results for {len(batch)} requests")
            except Exception as exc:  # noqa: BLE001 - the batch's callers get the error; the worker goes on
                results = [exc] * len(batch)
            for (_item, fut), res in zip(batch, results):
                if fut.done():
                    continue
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        while not self.queue.empty():
            _item, fut = self.queue.get_nowait()
            if not fut.done():
                fut.set_exception(Overloaded("the server is shutting down"))
