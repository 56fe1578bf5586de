"""Predict and generate: resolve the version, enforce the limits, run the model.

The hot path does no database query, file read or model load once a version is
warm: "latest version" lookups are reused for ``version_cache_seconds`` (explicit
versions never change), loaded predictors stay in the LRU cache, and forward
passes run batched on one compute thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from starlette.concurrency import run_in_threadpool

from app.errors import LimitExceededError
from app.ml.inference import Prediction, Predictor, reported_values
from app.serving.batcher import Batcher
from app.serving.cache import ModelCache
from app.settings import Settings
from app.store.registry import Registry
from app.store.tables import VersionRow

VersionKey = tuple[str, int | None]


class Serving:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        cache: ModelCache,
        on_batch: Callable[[int], None] = lambda size: None,
    ) -> None:
        self.settings = settings
        self.on_batch = on_batch
        self.registry = registry
        self.cache = cache
        # one compute thread: forward passes queue up instead of fighting over the cores
        self.compute = ThreadPoolExecutor(1, thread_name_prefix="charnn-compute")
        self._versions: dict[VersionKey, tuple[float, VersionRow]] = {}
        self._lookups: dict[VersionKey, asyncio.Future[VersionRow]] = {}
        self._generation = 0  # moves on every forget(): lookups begun before it don't cache
        self._batchers: dict[tuple[str, str], Batcher] = {}

    def close(self) -> None:
        self.compute.shutdown(wait=False, cancel_futures=True)

    def forget(self, model_name: str) -> None:
        """Drop everything cached about a model (it or one of its versions was deleted)."""
        self._generation += 1
        self._versions = {k: v for k, v in self._versions.items() if k[0] != model_name}
        self._batchers = {k: v for k, v in self._batchers.items() if k[0] != model_name}
        self.cache.evict_model(model_name)

    # --- resolving ----------------------------------------------------------------------------

    async def version(self, model_name: str, version: int | None) -> VersionRow:
        key = (model_name, version)
        cached = self._versions.get(key)
        if (
            cached is not None
            and time.monotonic() - cached[0] < self.settings.version_cache_seconds
        ):
            return cached[1]
        # one lookup per key at a time: when an entry expires under load, every request
        # for it would otherwise queue a query of its own (a latency spike every expiry)
        lookup = self._lookups.get(key)
        if lookup is None:
            lookup = asyncio.ensure_future(self._look_up(key))
            self._lookups[key] = lookup
            lookup.add_done_callback(partial(self._looked_up, key))
        return await asyncio.shield(lookup)  # a caller that goes away leaves it running

    async def _look_up(self, key: VersionKey) -> VersionRow:
        started, generation = time.monotonic(), self._generation
        row = await run_in_threadpool(self.registry.get_version, *key)
        if generation == self._generation:  # else a model was deleted meanwhile: don't cache
            self._versions[key] = (started, row)
        return row

    def _looked_up(self, key: VersionKey, lookup: asyncio.Future[VersionRow]) -> None:
        self._lookups.pop(key, None)
        if not lookup.cancelled():
            lookup.exception()  # retrieved here too: its callers may all have gone away

    async def predictor(self, model_name: str, row: VersionRow) -> Predictor:
        loaded = self.cache.peek(model_name, row.directory)
        if loaded is not None:
            return loaded
        return await run_in_threadpool(self.cache.get, model_name, row.directory)

    def batcher(self, model_name: str, row: VersionRow, predictor: Predictor) -> Batcher:
        key = (model_name, row.directory)
        batcher = self._batchers.get(key)
        if batcher is None or batcher.predictor is not predictor:
            # a batcher holds its predictor: keep none of a version the LRU has let go,
            # or every version ever served stays in memory past CHARNN_MODEL_CACHE_SIZE
            self._batchers = {
                k: b for k, b in self._batchers.items() if self.cache.holds(k, b.predictor)
            }
            batcher = Batcher(
                predictor,
                self.compute,
                self.settings.batch_max_size,
                self.settings.batch_max_wait_ms / 1000,
                self.on_batch,
            )
            self._batchers[key] = batcher
        return batcher

    # --- limits -------------------------------------------------------------------------------

    def check_inputs(self, field: str, texts: Sequence[str]) -> None:
        limit = self.settings.max_predict_inputs
        if len(texts) > limit:
            raise LimitExceededError(
                field, f"{len(texts)} inputs, at most {limit} allowed", "CHARNN_MAX_PREDICT_INPUTS"
            )
        longest = self.settings.max_input_length
        for i, text in enumerate(texts):
            if len(text) > longest:
                raise LimitExceededError(
                    f"{field}[{i}]",
                    f"{len(text)} characters, at most {longest} allowed",
                    "CHARNN_MAX_INPUT_LENGTH",
                )

    def check_reported_values(self, inputs: Sequence[str], top_k: int, probabilities: bool) -> None:
        values = reported_values(inputs, top_k, probabilities)
        limit = self.settings.max_predict_values
        if values > limit:
            raise LimitExceededError(
                "inputs",
                f"{sum(map(len, inputs))} characters x {top_k + int(probabilities)} reported "
                f"values each (top_k, return_probabilities) = {values} values, at most {limit}; "
                "send fewer characters per request or ask for fewer values",
                "CHARNN_MAX_PREDICT_VALUES",
            )

    def check_cost(self, field: str, characters: int, row: VersionRow) -> None:
        """Refuse a call whose forward passes would hold the compute thread too long."""
        cost, limit = characters * row.parameters, self.settings.max_inference_cost
        if cost > limit:
            raise LimitExceededError(
                field,
                f"{characters} characters through a model of {row.parameters} parameters = "
                f"{cost:.3g}, at most {limit:.3g}; send fewer characters per request",
                "CHARNN_MAX_INFERENCE_COST",
            )

    # --- the two operations ---------------------------------------------------------------------

    async def predict(
        self,
        model_name: str,
        version: int | None,
        inputs: Sequence[str],
        *,
        top_k: int = 0,
        probabilities: bool = False,
    ) -> tuple[VersionRow, list[Prediction]]:
        self.check_inputs("inputs", inputs)
        self.check_reported_values(inputs, top_k, probabilities)
        row = await self.version(model_name, version)
        self.check_cost("inputs", sum(map(len, inputs)), row)
        predictor = await self.predictor(model_name, row)
        ids = predictor.check_inputs(inputs)  # unknown characters fail this request only
        batcher = self.batcher(model_name, row, predictor)
        return row, await batcher.predict(ids, top_k=top_k, probabilities=probabilities)

    async def generate(
        self,
        model_name: str,
        version: int | None,
        prompt: str,
        length: int,
        temperature: float,
        seed: int | None,
    ) -> tuple[VersionRow, str]:
        if len(prompt) > self.settings.max_input_length:
            raise LimitExceededError(
                "prompt",
                f"{len(prompt)} characters, at most {self.settings.max_input_length} allowed",
                "CHARNN_MAX_INPUT_LENGTH",
            )
        if length > self.settings.max_generate_length:
            raise LimitExceededError(
                "length",
                f"{length} characters asked for, at most {self.settings.max_generate_length}",
                "CHARNN_MAX_GENERATE_LENGTH",
            )
        row = await self.version(model_name, version)
        self.check_cost("length", len(prompt) + length, row)
        predictor = await self.predictor(model_name, row)
        sample = partial(predictor.generate, prompt, length, temperature=temperature, seed=seed)
        return row, await asyncio.get_running_loop().run_in_executor(self.compute, sample)
