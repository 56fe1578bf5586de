"""Server-sent events of jobs: one poller per followed job, fanned out to its followers.

The stream of one follower::

    event: job              the job's summary (no history), first and at each change
    id: 7 / event: epoch    one event per epoch, each sent once; id is the epoch number
    event: progress         where a running job stands within its epoch (step progress),
                            when it changes; not replayed to a follower that reconnects
    event: end              the job ended (its final summary); the stream ends too
    : keep-alive            a comment after 15 quiet seconds

A follower first reads its own backlog (the epochs after its ``Last-Event-ID``, a page
at a time), then hears what the job's ``JobFeed`` finds: one task per followed job,
whatever the number of followers, polls the registry for the job's state and the epochs
after the last it saw, off the event loop, and stops when its last follower leaves.

Each follower's queue is bounded: one that reads too slowly to keep up is dropped from
the feed; its stream sends what it already holds and ends without ``end``, so the
client reconnects with the last epoch it got as ``Last-Event-ID`` and misses nothing.
At shutdown every stream ends at once (a server does not wait for its followers).

Epochs are told apart by number: an epoch trained again after a crash (the checkpoint
it was recorded with did not verify) is not sent again to a follower that had it;
``GET /jobs/{id}/epochs`` holds the record that stands.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from starlette.concurrency import run_in_threadpool

from app.api.job_views import read_job
from app.errors import TooManyRequestsError
from app.schemas import epoch_public
from app.store.registry import JobState, Registry
from app.store.tables import EpochRow

log = logging.getLogger("charnn.events")

KEEPALIVE_SECONDS = 15.0
QUEUE_SIZE = 256  # events a follower may lag behind the feed before it is dropped
PAGE_SIZE = 100  # epochs read at once, for a backlog or one poll
KEEP_ALIVE = ": keep-alive\n\n"


@dataclass(frozen=True)
class Event:
    """One server-sent event; ``epoch`` is set on epoch events (their ``id:``)."""

    name: str
    data: str
    epoch: int | None = None

    def encode(self) -> str:
        head = f"id: {self.epoch}\n" if self.epoch is not None else ""
        return f"{head}event: {self.name}\ndata: {self.data}\n\n"


def epoch_event(row: EpochRow) -> Event:
    return Event("epoch", epoch_public(row).model_dump_json(), epoch=row.epoch)


def epoch_events(registry: Registry, job_id: str, after: int) -> list[Event]:
    """The next page of a job's epochs after ``after``: blocking, for the thread pool."""
    return [epoch_event(row) for row in registry.job_epochs(job_id, after=after, limit=PAGE_SIZE)]


def encoded_epochs(registry: Registry, job_id: str, after: int) -> tuple[list[Event], str]:
    events = epoch_events(registry, job_id, after)
    return events, "".join(event.encode() for event in events)


def progress_event(progress: dict[str, Any]) -> Event:
    """As the worker recorded it (a StepProgress, validated when it was made)."""
    return Event("progress", json.dumps(progress, separators=(",", ":")))


def job_event(registry: Registry, job_id: str, name: str = "job") -> Event:
    """The job's summary: blocking, call it in the thread pool."""
    return Event(name, read_job(registry, job_id).model_dump_json())


class Follower:
    """One stream's queue; ``None`` in it means the stream ends there."""

    def __init__(self, after: int) -> None:
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(QUEUE_SIZE + 1)
        self.last_epoch = after  # the newest epoch this stream has sent
        self.closed = False

    def push(self, event: Event) -> bool:
        """Queue an event; False when the follower is too far behind to take it."""
        if self.closed or self.queue.qsize() >= QUEUE_SIZE:
            return False
        self.queue.put_nowait(event)
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)  # the queue keeps one place free for this


class JobFeed:
    """The one poller of a job, and the followers it serves."""

    def __init__(self, registry: Registry, job_id: str, poll_seconds: float) -> None:
        self.registry = registry
        self.job_id = job_id
        self.poll_seconds = poll_seconds
        self.followers: set[Follower] = set()
        self.ready = asyncio.Event()  # set once the feed knows where the job stands
        self.ended = False
        self.task: asyncio.Task[None] | None = None

    def publish(self, event: Event) -> None:
        for follower in list(self.followers):
            if not follower.push(event):
                log.info("job %s: a follower fell %d events behind", self.job_id, QUEUE_SIZE)
                self.followers.discard(follower)
                follower.close()

    async def run(self) -> None:
        """Poll until the job ends or nobody follows; never let one error end the feed."""
        state: JobState | None = None
        failing = False
        while self.followers:
            try:
                state = await self.poll(state)
                failing = False
            except Exception:
                if not failing:  # once per outage (the database is down), not per poll
                    log.exception("job %s: polling for its events failed", self.job_id)
                failing = True
            if self.ended:
                return
            await asyncio.sleep(self.poll_seconds)

    async def poll(self, before: JobState | None) -> JobState:
        """One look at the registry: the state first, so a final state follows every epoch."""
        state = await run_in_threadpool(self.registry.job_state, self.job_id)
        if before is None:  # the first look: followers read what came before themselves
            self.ready.set()
            return state
        after = before.epoch
        while state.epoch > after:
            events = await run_in_threadpool(epoch_events, self.registry, self.job_id, after)
            for event in events:
                self.publish(event)
            if len(events) < PAGE_SIZE:
                break
            after = events[-1].epoch or after
        if state.progress is not None and state.progress != before.progress:
            self.publish(progress_event(state.progress))
        changed = (state.status, state.attempts, state.failures, state.cancel_requested) != (
            before.status,
            before.attempts,
            before.failures,
            before.cancel_requested,
        )
        if changed or state.status.is_final:
            name = "end" if state.status.is_final else "job"
            self.publish(await run_in_threadpool(job_event, self.registry, self.job_id, name))
        if state.status.is_final:
            self.end()
        return state

    def end(self) -> None:
        self.ended = True
        for follower in self.followers:
            follower.close()
        self.followers.clear()


class JobEvents:
    """The feeds of every followed job (one per job), and the streams that read them."""

    def __init__(self, registry: Registry, poll_seconds: float, max_streams: int) -> None:
        self.registry = registry
        self.poll_seconds = poll_seconds
        self.max_streams = max_streams
        self.feeds: dict[str, JobFeed] = {}
        self.followers: set[Follower] = set()
        self.closing = False

    def _feed(self, job_id: str) -> JobFeed:
        feed = self.feeds.get(job_id)
        if feed is None or feed.ended:
            feed = self.feeds[job_id] = JobFeed(self.registry, job_id, self.poll_seconds)
            feed.task = asyncio.create_task(self._run(feed), name=f"job-feed-{job_id}")
        return feed

    async def _run(self, feed: JobFeed) -> None:
        try:
            await feed.run()
        finally:
            if self.feeds.get(feed.job_id) is feed:
                del self.feeds[feed.job_id]
            feed.end()
            feed.ready.set()  # a follower still waiting for the first look stops waiting

    def admit(self) -> None:
        """Refuse a stream beyond ``max_streams`` (each holds a connection and a queue)."""
        if len(self.followers) >= self.max_streams:
            raise TooManyRequestsError(
                f"{len(self.followers)} event streams are open, the most this server "
                "keeps (limit set by CHARNN_MAX_EVENT_STREAMS); try again later",
                retry_after=5,
            )

    async def stream(self, job_id: str, after: int = 0) -> AsyncIterator[str]:
        """The text of one follower's stream: summary, backlog after ``after``, then live."""
        if self.closing:
            return
        follower = Follower(after)
        feed = self._feed(job_id)
        feed.followers.add(follower)  # before the backlog is read: nothing falls between
        self.followers.add(follower)
        try:
            await feed.ready.wait()
            if follower.closed:
                return
            yield (await run_in_threadpool(job_event, self.registry, job_id)).encode()
            async for page in self._backlog(job_id, follower):
                yield page
            async for text in self._live(follower):
                yield text
        finally:
            feed.followers.discard(follower)
            self.followers.discard(follower)

    async def _backlog(self, job_id: str, follower: Follower) -> AsyncIterator[str]:
        while not self.closing:
            # read and encoded in the thread pool, not on the loop: a page costs milliseconds
            events, text = await run_in_threadpool(
                encoded_epochs, self.registry, job_id, follower.last_epoch
            )
            if events:
                follower.last_epoch = events[-1].epoch or follower.last_epoch
                yield text
            if len(events) < PAGE_SIZE:
                return

    async def _live(self, follower: Follower) -> AsyncIterator[str]:
        while not self.closing:
            try:
                event = await asyncio.wait_for(follower.queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                yield KEEP_ALIVE
                continue
            if event is None or self.closing:
                return
            if event.epoch is not None:
                if event.epoch <= follower.last_epoch:
                    continue  # the backlog had it already
                follower.last_epoch = event.epoch
            yield event.encode()
            if event.name == "end":
                return

    def close(self) -> None:
        """End every stream now, and stop every feed (the server is stopping)."""
        self.closing = True
        for follower in list(self.followers):
            follower.close()
        for feed in list(self.feeds.values()):
            if feed.task is not None:
                feed.task.cancel()

    def close_on_exit_signals(self) -> Callable[[], None]:
        """Close the streams as soon as the server is told to stop; returns the undo.

        uvicorn waits for open responses to finish before it runs the lifespan's
        shutdown, and a followed job may run for days: the streams must end when the
        stop signal comes, not when the lifespan ends. The server's own handler still
        runs first.
        """
        loop = asyncio.get_running_loop()
        previous: dict[int, Any] = {}

        def handler(signum: int, frame: FrameType | None) -> None:
            earlier = previous.get(signum)
            if callable(earlier):
                earlier(signum, frame)
            loop.call_soon_threadsafe(self.close)

        for signum in (signal.SIGINT, signal.SIGTERM):
            if not callable(signal.getsignal(signum)):
                continue  # no server handles it: its default action stops the process
            try:
                previous[signum] = signal.signal(signum, handler)
            except ValueError:  # not the main thread (TestClient): the lifespan's end will do
                break

        def undo() -> None:
            for signum, earlier in previous.items():
                if signal.getsignal(signum) is handler:
                    signal.signal(signum, earlier)

        return undo
