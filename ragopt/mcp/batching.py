"""Micro-batching of concurrent tool searches: one worker thread runs the queries that wait, in small
length-sorted batches, and answers each caller (a thread or an asyncio task) when its batch is done.
Used by :class:`~ragopt.mcp.service.ToolService`."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ragopt.pipeline import Stage

__all__ = ["Batcher", "Slot", "outcome"]

log = logging.getLogger("ragopt.mcp")


class Slot:
    """One queued query: its pipeline, the callback that answers its caller, and then its result or error."""

    __slots__ = ("pipeline", "query", "result", "error", "deliver", "wanted", "t")

    def __init__(
        self, pipeline: Stage, query: str, deliver: Callable[[Slot], None], wanted: Callable[[], bool] | None = None
    ):
        self.pipeline, self.query, self.deliver, self.wanted = pipeline, query, deliver, wanted
        self.result: list[tuple[str, float]] | None = None
        self.error: BaseException | None = None
        self.t = time.monotonic()


class Batcher:
    """Runs concurrent searches as micro-batches on one worker thread.

    Stages are not promised to be thread-safe (stemmers, torch), so one thread calls the pipeline. Requests wait
    in a queue; each round the worker takes every query waiting for the same pipeline, sorts them by length and
    runs them in batches of at most ``max_batch`` queries, answering each batch's callers as soon as it is done.
    Small length-sorted batches, not one big one: on CPU an encoder batch pads every query to its longest, and
    per query a batch of 64 costs 2-3x a batch of 8 (measured with all-MiniLM-L6-v2 on toollens queries,
    benchmarks/MCP.md). When fewer than ``max_batch`` queries wait, the worker waits up to ``max_wait`` seconds
    from the first one's arrival for more. The thread starts on the first request and ends after ``idle``
    seconds without any. ``calls`` counts pipeline calls."""

    def __init__(self, max_batch: int = 8, max_wait: float = 0.002, idle: float = 60.0, max_round: int = 256):
        self.max_batch, self.max_wait, self.idle, self.max_round = max_batch, max_wait, idle, max_round
        self._pending: list[Slot] = []
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self.calls = 0

    def submit(
        self,
        pipeline: Stage,
        query: str,
        deliver: Callable[[Slot], None],
        wanted: Callable[[], bool] | None = None,
    ) -> None:
        """Queue ``query``; ``deliver(slot)`` is called on the worker thread once its result or error is set.
        ``wanted()`` false when its batch comes: the caller has gone (cancelled), the query is dropped unrun."""
        slot = Slot(pipeline, query, deliver, wanted)
        with self._cv:
            self._pending.append(slot)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="ragopt-mcp-search", daemon=True)
                self._thread.start()
            self._cv.notify()

    def search(self, pipeline: Stage, query: str) -> list[tuple[str, float]]:
        """The ranked ``(id, score)`` list for ``query``, from a thread (blocks until its batch ran)."""
        done = threading.Event()
        box: list[Slot] = []

        def deliver(slot: Slot) -> None:
            box.append(slot)
            done.set()

        self.submit(pipeline, query, deliver)
        done.wait()
        return outcome(box[0])

    async def search_async(self, pipeline: Stage, query: str) -> list[tuple[str, float]]:
        """:meth:`search` for an asyncio event loop: waits without holding a thread."""
        import asyncio

        loop = asyncio.get_running_loop()
        future: asyncio.Future[Slot] = loop.create_future()

        def resolve(slot: Slot) -> None:
            if not future.done():  # the caller may have been cancelled
                future.set_result(slot)

        self.submit(pipeline, query, lambda slot: loop.call_soon_threadsafe(resolve, slot), lambda: not future.done())
        return outcome(await future)

    def _take(self) -> list[Slot] | None:
        """The next round (None: idle for ``idle`` seconds, the thread ends)."""
        with self._cv:
            while not self._pending:
                if not self._cv.wait(self.idle) and not self._pending:
                    self._thread = None
                    return None
            if len(self._pending) < self.max_batch and self.max_wait > 0:
                until = self._pending[0].t + self.max_wait
                while len(self._pending) < self.max_batch and (left := until - time.monotonic()) > 0:
                    self._cv.wait(left)
            pipe = self._pending[0].pipeline
            batch = [s for s in self._pending if s.pipeline is pipe][: self.max_round]
            taken = set(map(id, batch))
            self._pending = [s for s in self._pending if id(s) not in taken]
            return batch

    def _work(self) -> None:
        batch: list[Slot] = []
        try:
            while (batch := self._take()) is not None:
                batch.sort(key=lambda s: len(s.query))
                for start in range(0, len(batch), self.max_batch):
                    # an overloaded server skips the queries whose callers gave up, instead of falling behind
                    chunk = [s for s in batch[start : start + self.max_batch] if s.wanted is None or s.wanted()]
                    if chunk:
                        self._run(chunk)
        except BaseException as e:  # a bug here must fail the waiting requests, not leave them waiting forever
            log.exception("tool search worker failed")
            with self._cv:
                self._thread, failed, self._pending = None, self._pending, []
            for s in [s for s in batch or [] if s.result is None and s.error is None] + failed:
                s.error = e
                s.deliver(s)

    def _run(self, batch: list[Slot]) -> None:
        try:
            self.calls += 1
            out = batch[0].pipeline.search([s.query for s in batch])
            for row, s in enumerate(batch):
                s.result = out.ranked(row)
        except BaseException as e:  # the callers get it; the worker goes on
            for s in batch:
                s.error = e
        for s in batch:
            try:
                s.deliver(s)
            except Exception:  # a closed event loop: its caller is gone
                log.debug("search result not delivered", exc_info=True)


def outcome(slot: Slot) -> list[tuple[str, float]]:
    """The ranked list a delivered slot holds, or its error raised."""
    if slot.error is not None:
        raise slot.error
    return slot.result or []
