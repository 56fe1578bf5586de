"""The fan-out behind GET /jobs/{id}/events: bounded followers, each event to each once.

The streams themselves are tested through the API (tests/api/test_jobs.py) and against a
real server with many followers (tests/abuse/test_event_streams.py); these tests hold
the one rule that needs a follower slower than any real client can be made to be.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.api.job_events import QUEUE_SIZE, Event, Follower, JobFeed
from app.settings import Settings
from app.store.registry import Registry


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    registry = Registry.connect(Settings(store_dir=tmp_path).registry_url)
    yield registry
    registry.close()


def epoch(n: int) -> Event:
    return Event("epoch", f'{{"epoch": {n}}}', epoch=n)


def drained(follower: Follower) -> list[Event | None]:
    events = []
    while not follower.queue.empty():
        events.append(follower.queue.get_nowait())
    return events


def test_a_follower_too_far_behind_is_dropped_after_what_it_holds(registry: Registry) -> None:
    feed = JobFeed(registry, "job", poll_seconds=0.25)
    slow, reading = Follower(after=0), Follower(after=0)
    feed.followers |= {slow, reading}

    for n in range(1, QUEUE_SIZE + 1):
        feed.publish(epoch(n))
        drained(reading)
    feed.publish(epoch(QUEUE_SIZE + 1))

    assert feed.followers == {reading}
    # its stream sends the epochs it holds, then ends: the client resumes after the last
    assert drained(slow) == [epoch(n) for n in range(1, QUEUE_SIZE + 1)] + [None]
    assert drained(reading) == [epoch(QUEUE_SIZE + 1)]
    feed.publish(epoch(QUEUE_SIZE + 2))
    assert drained(slow) == []


def test_an_event_is_encoded_as_server_sent_event_text() -> None:
    assert epoch(7).encode() == 'id: 7\nevent: epoch\ndata: {"epoch": 7}\n\n'
    assert Event("end", "{}").encode() == "event: end\ndata: {}\n\n"
