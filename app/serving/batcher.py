"""Dynamic batching: concurrent predict requests for one version share one forward pass.

    decode (per request, in the event loop)  ->  batch  ->  predict (compute thread)
    ->  unbatch  ->  encode (per request)

Each request is checked and encoded before it joins a batch, so a bad request fails
alone. A collector task per model version takes the first waiting request, then
everything else waiting (up to ``max_batch`` sequences), optionally waits up to
``max_wait`` for more, and runs the batch on the single compute thread, so the event
loop never runs a forward pass. Requests that arrive during a forward pass form the
next batch: under load batches grow by themselves, and a lone request never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from functools import partial

from app.ml.inference import Prediction, Predictor


@dataclass
class Pending:
    ids: Sequence[Sequence[int]]
    top_k: int
    probabilities: bool
    future: asyncio.Future[list[Prediction]] = field(repr=False)


class Batcher:
    def __init__(
        self, predictor: Predictor, executor: Executor, max_batch: int, max_wait: float
    ) -> None:
        self.predictor = predictor
        self.executor = executor
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._queue: asyncio.Queue[Pending] = asyncio.Queue()
        self._collector: asyncio.Task[None] | None = None
        self.batch_sizes: list[int] = []  # recent batch sizes, for metrics and tests

    async def predict(
        self, ids: Sequence[Sequence[int]], *, top_k: int = 0, probabilities: bool = False
    ) -> list[Prediction]:
        if self._collector is None or self._collector.done():
            self._collector = asyncio.create_task(self._collect(), name="charnn-batcher")
        future: asyncio.Future[list[Prediction]] = asyncio.get_running_loop().create_future()
        await self._queue.put(Pending(ids, top_k, probabilities, future))
        return await future

    async def close(self) -> None:
        if self._collector is not None:
            self._collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._collector

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            try:
                rows = [row for pending in batch for row in pending.ids]
                forward = partial(
                    self.predictor.predict_ids,
                    rows,
                    top_k=max(p.top_k for p in batch),
                    probabilities=any(p.probabilities for p in batch),
                )
                results = await loop.run_in_executor(self.executor, forward)
            except Exception as exc:  # the model itself failed: every request in it learns why
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                continue
            self._record(len(rows))
            start = 0
            for pending in batch:
                mine = results[start : start + len(pending.ids)]
                start += len(pending.ids)
                if not pending.future.done():  # a client that went away is simply skipped
                    pending.future.set_result([_trim(r, pending) for r in mine])

    async def _gather(self) -> list[Pending]:
        """The next batch: whatever waits now, and more for up to ``max_wait``."""
        batch = [await self._queue.get()]
        size = len(batch[0].ids)
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while size < self.max_batch:
            if self._queue.empty():
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    pending = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                pending = self._queue.get_nowait()
            batch.append(pending)
            size += len(pending.ids)
        return batch

    def _record(self, size: int) -> None:
        self.batch_sizes.append(size)
        del self.batch_sizes[:-1000]


def _trim(prediction: Prediction, pending: Pending) -> Prediction:
    """Drop what this request did not ask for (the batch computed the most anyone asked)."""
    return replace(
        prediction,
        probabilities=prediction.probabilities if pending.probabilities else None,
        top_k=[k[: pending.top_k] for k in prediction.top_k]
        if pending.top_k and prediction.top_k is not None
        else None,
    )
