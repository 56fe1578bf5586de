"""Dynamic batching: concurrent predict requests for one version share one forward pass.

    decode (per request, in the event loop)  ->  batch  ->  predict (compute thread)
    ->  unbatch  ->  encode (per request)

Each request is checked and encoded before it joins a batch, so a bad request fails
alone. Requests wait in a list; when no batch of this version is running, the
waiting ones (up to ``max_batch`` sequences) go to the compute thread as one batch,
so the event loop never runs a forward pass. Requests that arrive meanwhile form the
next batch: under load batches grow by themselves, and a lone request never waits.
``max_wait`` optionally holds a small batch back a little for company.

One more wait keeps batches whole under load. When a batch ends, the clients it
answered are about to ask again, but the next batch would start at once with only
those that were already waiting: batches then alternate large and small (measured:
8 and 24 at 32 clients on the medium model), and small ones waste the forward pass.
So when a batch would start smaller than the one that just ran plus those that
waited for it, while the clients just answered may still be on their way back
(within one forward pass of its end), it waits for them, but never longer than a
tenth of that forward pass. A lone client is never held: it is all it waits for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field, replace
from functools import partial

from app.ml.inference import Prediction, Predictor

GATHER_FRACTION = 0.1  # of the last forward pass: the most a batch waits to be whole again


@dataclass
class Pending:
    ids: Sequence[Sequence[int]]
    top_k: int
    probabilities: bool
    future: asyncio.Future[list[Prediction]] = field(repr=False)


class Batcher:
    def __init__(
        self,
        predictor: Predictor,
        executor: Executor,
        max_batch: int,
        max_wait: float,
        on_batch: Callable[[int], None] = lambda size: None,
    ) -> None:
        self.predictor = predictor
        self.on_batch = on_batch
        self.executor = executor
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._waiting: list[Pending] = []
        self._busy = False  # a batch is running, or is about to start
        self._gathering: asyncio.TimerHandle | None = None  # waiting for the batch to fill
        # after a batch: how many may join the next (what a gathering waits for), and
        # the batch's forward time and end
        self._target = 0
        self._forward_seconds = 0.0
        self._finished_at = 0.0

    async def predict(
        self, ids: Sequence[Sequence[int]], *, top_k: int = 0, probabilities: bool = False
    ) -> list[Prediction]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Prediction]] = loop.create_future()
        self._waiting.append(Pending(ids, top_k, probabilities, future))
        if self._gathering is not None:
            if self._waiting_size() >= self._target:
                self._gathering.cancel()
                self._gathered(loop)
        elif not self._busy:
            self._busy = True
            if self.max_wait > 0:
                loop.call_later(self.max_wait, self._start, loop)
            else:
                self._start_or_gather(loop)
        return await future

    def _waiting_size(self) -> int:
        return sum(len(p.ids) for p in self._waiting)

    def _start_or_gather(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the next batch now, or give the last batch's clients a moment to join it."""
        returning = loop.time() - self._finished_at < self._forward_seconds
        if returning and 0 < self._waiting_size() < self._target:
            delay = GATHER_FRACTION * self._forward_seconds
            self._gathering = loop.call_later(delay, self._gathered, loop)
        else:
            self._start(loop)

    def _gathered(self, loop: asyncio.AbstractEventLoop) -> None:
        self._gathering = None
        self._start(loop)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Send the next batch to the compute thread (in the event loop)."""
        batch: list[Pending] = []
        size = 0
        while self._waiting and (not batch or size + len(self._waiting[0].ids) <= self.max_batch):
            pending = self._waiting.pop(0)
            batch.append(pending)
            size += len(pending.ids)
        if not batch:
            self._busy = False
            return
        forward = partial(_run_batch, self.predictor, batch)
        self.executor.submit(forward).add_done_callback(
            lambda outcome: loop.call_soon_threadsafe(self._finish, loop, batch, outcome)
        )

    def _finish(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[Pending],
        outcome: Future[tuple[list[list[Prediction]], float]],
    ) -> None:
        """Hand each request its share of the results, then start the next batch."""
        error = outcome.exception()
        shares, self._forward_seconds = outcome.result() if error is None else ([], 0.0)
        size = sum(len(p.ids) for p in batch)
        # the clients just answered, and those already waiting: all may be in the next batch
        self._target = min(size + self._waiting_size(), self.max_batch)
        self._finished_at = loop.time()
        # first: the compute thread should not wait for the bookkeeping below
        self._start_or_gather(loop)
        for i, pending in enumerate(batch):
            if pending.future.done():  # a client that went away is simply skipped
                continue
            if error is not None:  # the model itself failed: every request in it learns why
                pending.future.set_exception(error)
            else:
                pending.future.set_result(shares[i])
        self.on_batch(size)


def _run_batch(predictor: Predictor, batch: list[Pending]) -> tuple[list[list[Prediction]], float]:
    """One forward pass for the whole batch, then each request's share (compute thread).

    The shares are cut here, not in the event loop: a large top_k answer is thousands
    of lists to slice.
    """
    started = time.perf_counter()
    top_k = max(p.top_k for p in batch)
    probabilities = any(p.probabilities for p in batch)
    results = predictor.predict_ids(
        [row for pending in batch for row in pending.ids], top_k=top_k, probabilities=probabilities
    )
    shares, start = [], 0
    for pending in batch:
        mine = results[start : start + len(pending.ids)]
        start += len(pending.ids)
        if (pending.top_k, pending.probabilities) != (top_k, probabilities):
            mine = [_trim(r, pending) for r in mine]  # it asked for less than another did
        shares.append(mine)
    return shares, time.perf_counter() - started


def _trim(prediction: Prediction, pending: Pending) -> Prediction:
    """Drop what this request did not ask for (the batch computed the most anyone asked)."""
    return replace(
        prediction,
        probabilities=prediction.probabilities if pending.probabilities else None,
        top_k=prediction.top_k.first(pending.top_k)
        if pending.top_k and prediction.top_k is not None
        else None,
        label=prediction.label.first(pending.top_k) if prediction.label is not None else None,
    )
