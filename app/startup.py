"""Waiting at start-up for the database and Redis, which in containers may come up later.

The API and ``charnn worker`` call ``wait_for_dependencies`` before they connect for good:
each dependency is tried until it answers, with a growing pause between tries, for at
most CHARNN_STARTUP_WAIT_SECONDS in all. Only a failure to connect is tried again;
anything else (a migration that fails, a bad setting) stops the start at once, later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial

from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from sqlalchemy.exc import OperationalError

from app.settings import Settings
from app.store.registry import Registry

log = logging.getLogger("charnn.startup")

FIRST_PAUSE_SECONDS = 0.5
LONGEST_PAUSE_SECONDS = 5.0
# what a server that is not up yet looks like: refused, unknown name, timed out
NOT_UP_YET = (OperationalError, RedisConnectionError, RedisTimeoutError, OSError)


class DependencyUnavailable(RuntimeError):
    """The database or Redis did not answer within CHARNN_STARTUP_WAIT_SECONDS."""


def wait_for_dependencies(settings: Settings, *, redis: bool) -> None:
    """Until the registry's database (and Redis, if ``redis``) answer; DependencyUnavailable
    once CHARNN_STARTUP_WAIT_SECONDS have passed."""
    deadline = time.monotonic() + settings.startup_wait_seconds
    if not settings.registry_url.startswith("sqlite"):  # a file: no server to wait for
        wait_for("the database", partial(ping_database, settings.registry_url), deadline)
    if redis:
        wait_for("Redis", partial(ping_redis, settings.redis_url), deadline)


def wait_for(name: str, ping: Callable[[], None], deadline: float) -> None:
    pause = FIRST_PAUSE_SECONDS
    while True:
        try:
            ping()
            return
        except NOT_UP_YET as exc:
            # the class alone: enough to tell refused from timed out, and no driver's
            # message can quote a password into the logs through it
            error = type(exc).__name__
            left = deadline - time.monotonic()
            if left <= 0:
                raise DependencyUnavailable(
                    f"{name} did not answer within CHARNN_STARTUP_WAIT_SECONDS ({error})"
                ) from exc
            pause = min(pause, left)
            log.warning("%s does not answer yet (%s); trying again in %.1f s", name, error, pause)
            time.sleep(pause)
            pause = min(pause * 2, LONGEST_PAUSE_SECONDS)


def ping_database(url: str) -> None:
    registry = Registry.connect(url, migrate=False)
    try:
        registry.ping()
    finally:
        registry.close()


def ping_redis(url: str) -> None:
    # one try per ping: the pauses between tries are wait_for's
    client = Redis.from_url(url, socket_timeout=5, retry=Retry(NoBackoff(), 0))
    try:
        client.ping()
    finally:
        client.close()
