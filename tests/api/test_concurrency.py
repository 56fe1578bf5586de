"""Requests that really overlap: httpx.AsyncClient over ASGITransport, in one event loop.

Concurrent predictions for one version share forward passes, yet each request is
answered on its own: a bad one fails alone. The lifespan is entered by hand, as
ASGITransport does not run it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from app.main import create_app
from app.ml.checkpoint import Checkpoint
from app.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the service's own loop, as under uvicorn


@pytest.fixture
async def api(
    make_settings: Callable[..., Settings],
    publish: Callable[[str, Checkpoint], int],
    hello_model: Checkpoint,
) -> AsyncIterator[httpx.AsyncClient]:
    publish("hello", hello_model)
    app = create_app(make_settings())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


async def predict(api: httpx.AsyncClient, *inputs: str) -> tuple[int, Any]:
    response = await api.post("/predict", json={"model_name": "hello", "inputs": list(inputs)})
    return response.status_code, response.json()


async def test_concurrent_predictions_are_each_answered(api: httpx.AsyncClient) -> None:
    inputs = ["hello", "hell", "he", "h"] * 8

    answers = await asyncio.gather(*(predict(api, text) for text in inputs))

    expected = {"hello": "ohlol", "hell": "ohlo", "he": "oh", "h": "o"}
    assert answers == [
        (200, {"model_name": "hello", "version": 1, "outputs": [expected[t]], "details": None})
        for t in inputs
    ]


async def test_a_bad_request_among_concurrent_ones_fails_alone(api: httpx.AsyncClient) -> None:
    good, bad, also_good = await asyncio.gather(
        predict(api, "hello"), predict(api, "hexlo"), predict(api, "hello", "hell")
    )

    assert good == (
        200,
        {"model_name": "hello", "version": 1, "outputs": ["ohlol"], "details": None},
    )
    assert bad[0] == 422
    assert [e["msg"] for e in bad[1]["detail"]] == [
        "unknown character 'x' at position 2; the vocabulary is 'ehlo'"
    ]
    assert also_good[0] == 200
    assert also_good[1]["outputs"] == ["ohlol", "ohlo"]


async def test_concurrent_submissions_each_queue_their_own_job(
    api: httpx.AsyncClient, hello: dict[str, Any]
) -> None:
    names = [f"model-{n}" for n in range(8)]

    responses = await asyncio.gather(
        *(api.post("/train", json={**hello, "model_name": name}) for name in names)
    )

    assert [r.status_code for r in responses] == [202] * 8
    assert sorted(r.json()["model_name"] for r in responses) == names
    assert len({r.json()["id"] for r in responses}) == 8
    assert (await api.get("/jobs")).json()["total"] == 8


async def test_several_clients_follow_one_job_to_its_end(
    api: httpx.AsyncClient, hello: dict[str, Any]
) -> None:
    job_id = (await api.post("/train", json=hello)).json()["id"]

    async def follow() -> list[str]:
        response = await api.get(f"/jobs/{job_id}/events", timeout=60)
        assert response.status_code == 200
        return [line for line in response.text.split("\n") if line.startswith("event: ")]

    followers = await asyncio.gather(follow(), follow(), follow(), predict(api, "hello"))

    for events in followers[:3]:
        assert (events[0], events[-1]) == ("event: job", "event: end")
        assert events.count("event: epoch") == hello["hyperparameters"]["epochs"]  # each once
    assert followers[3][0] == 200  # answered while three streams were open


async def test_requests_that_find_the_version_expired_share_one_lookup(
    make_settings: Callable[..., Settings],
    publish: Callable[[str, Checkpoint], int],
    hello_model: Checkpoint,
) -> None:
    # every request finds "the latest version of hello" expired; were each to look it up
    # itself, a burst would queue one registry query per request
    publish("hello", hello_model)
    app = create_app(make_settings(version_cache_seconds=0))
    async with app.router.lifespan_context(app):
        lookups = []

        def slow_model_lookup(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if "FROM models" in statement:
                lookups.append(statement)
                time.sleep(0.2)  # in the thread pool: the burst arrives meanwhile

        event.listen(app.state.services.registry.engine, "before_cursor_execute", slow_model_lookup)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            answers = await asyncio.gather(*(predict(client, "hello") for _ in range(32)))

    assert {status for status, _ in answers} == {200}
    assert len(lookups) == 1
