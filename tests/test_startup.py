"""Waiting at start-up for the database and Redis (app/startup.py), without waiting."""

from __future__ import annotations

import logging

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import OperationalError, ProgrammingError

import app.startup as startup
from app.settings import Settings
from app.startup import DependencyUnavailable, wait_for, wait_for_dependencies
from tests.conftest import free_port

PASSWORD = "never-in-a-log"


class Clock:
    """``time.monotonic`` and ``time.sleep`` of app.startup: sleeping moves the clock on."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.pauses: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(startup.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(startup.time, "sleep", clock.sleep)
    return clock


class Ping:
    """A ping that raises ``error`` the first ``failures`` times, then answers."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error


def test_it_tries_again_with_pauses_that_double_up_to_five_seconds(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    ping = Ping(6, RedisConnectionError("refused"))

    with caplog.at_level(logging.WARNING, "charnn.startup"):
        wait_for("Redis", ping, deadline=clock.now + 60)

    assert ping.calls == 7
    assert clock.pauses == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert (
        caplog.messages[0] == "Redis does not answer yet (ConnectionError); trying again in 0.5 s"
    )
    assert len(caplog.messages) == 6


def test_it_gives_up_at_the_deadline_naming_the_dependency(clock: Clock) -> None:
    ping = Ping(100, OSError("no route to host"))

    with pytest.raises(DependencyUnavailable) as gave_up:
        wait_for("the database", ping, deadline=clock.now + 3)

    assert str(gave_up.value) == (
        "the database did not answer within CHARNN_STARTUP_WAIT_SECONDS (OSError)"
    )
    assert clock.pauses == [0.5, 1.0, 1.5]  # the last pause ends at the deadline
    assert ping.calls == 4


def test_no_wait_means_one_try(clock: Clock) -> None:
    ping = Ping(1, RedisConnectionError("refused"))

    with pytest.raises(DependencyUnavailable):
        wait_for("Redis", ping, deadline=clock.now)

    assert (ping.calls, clock.pauses) == (1, [])


def test_other_errors_are_not_tried_again(clock: Clock) -> None:
    error = ProgrammingError("ALTER TABLE jobs", {}, Exception("syntax error"))
    ping = Ping(1, error)

    with pytest.raises(ProgrammingError):
        wait_for("the database", ping, deadline=clock.now + 60)

    assert (ping.calls, clock.pauses) == (1, [])


def test_waiting_for_real_servers_shows_no_password(caplog: pytest.LogCaptureFixture) -> None:
    """A database and a Redis on ports where nothing listens, both with passwords."""
    port = free_port()
    settings = Settings(
        database_url=f"postgresql+psycopg://charnn@127.0.0.1:{port}/charnn",
        database_password=PASSWORD,
        redis_url=f"redis://:{PASSWORD}@127.0.0.1:{port}/0",
        startup_wait_seconds=0.3,
    )

    with (
        caplog.at_level(logging.WARNING, "charnn.startup"),
        pytest.raises(DependencyUnavailable) as gave_up,
    ):
        wait_for_dependencies(settings, redis=True)

    assert caplog.messages  # one a try, each naming the database and the error's class
    for message in caplog.messages:
        assert message.startswith("the database does not answer yet (OperationalError); ")
    assert isinstance(gave_up.value.__cause__, OperationalError)
    shown = [caplog.text, str(gave_up.value), str(gave_up.value.__cause__)]
    assert not [text for text in shown if PASSWORD in text]

    redis_only = Settings(redis_url=settings.redis_url, startup_wait_seconds=0)
    with pytest.raises(DependencyUnavailable) as gave_up:
        wait_for_dependencies(redis_only, redis=True)  # SQLite: nothing to wait for
    assert str(gave_up.value).startswith("Redis did not answer")
    assert PASSWORD not in str(gave_up.value) + str(gave_up.value.__cause__)
