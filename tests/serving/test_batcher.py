"""The batcher on its own: a real predictor, a real compute thread, clients in one loop.

Clients that ask again as soon as they are answered (a closed loop, like any client
waiting on its last answer) must keep finding each other in one batch, instead of
the first one back starting a batch of its own and the rest forming the next.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from app.ml.checkpoint import Checkpoint
from app.ml.inference import Predictor
from app.serving.batcher import Batcher

pytestmark = pytest.mark.anyio

LONG = "hello" * 40  # long enough that a forward pass outlasts a client's way back


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def closed_loop(batcher: Batcher, ids: list[list[int]], clients: int, rounds: int) -> None:
    async def client() -> None:
        for _ in range(rounds):
            await batcher.predict(ids)

    await asyncio.gather(*(client() for _ in range(clients)))


async def test_clients_that_ask_again_at_once_keep_sharing_whole_batches(
    hello_model: Checkpoint,
) -> None:
    predictor = Predictor.from_checkpoint(hello_model, torch.device("cpu"))
    sizes: list[int] = []
    with ThreadPoolExecutor(1) as compute:
        batcher = Batcher(predictor, compute, max_batch=64, max_wait=0, on_batch=sizes.append)
        await closed_loop(batcher, predictor.vocab.encode_inputs([LONG]), clients=8, rounds=20)

    assert sum(sizes) == 8 * 20
    whole = sum(1 for size in sizes if size == 8)
    assert whole >= 0.8 * len(sizes), sizes  # not 1, 7, 1, 7, ...
