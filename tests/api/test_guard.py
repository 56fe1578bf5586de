"""Host and Origin: which names the service answers to, and which pages may change things.

The end-to-end attack (a rebound DNS name, a form posted from another site) is in
tests/abuse/test_hostile_requests.py; these are the rules, one by one.
"""

from __future__ import annotations

import pytest

from app.api.guard import RequestGuard, split_host
from app.settings import parse_hosts

GUARD = RequestGuard(parse_hosts("localhost,127.0.0.1,[::1],charnn.example.com"))


def request(method: str, host: str | None, origin: str | None = None) -> dict[str, object]:
    headers = []
    if host is not None:
        headers.append((b"host", host.encode()))
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return {"type": "http", "method": method, "headers": headers}


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", ("localhost", None)),
        ("LocalHost:8000", ("localhost", 8000)),
        ("[::1]:8000", ("::1", 8000)),
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("[::1", ("", None)),  # a bracket left open
        ("localhost:http", ("", None)),  # a port that is no number
    ],
)
def test_host_headers_are_read_as_name_and_port(host: str, expected: tuple[str, int]) -> None:
    assert split_host(host) == expected


@pytest.mark.parametrize(
    "host", ["localhost:8000", "127.0.0.1", "[::1]:8000", "CHARNN.example.com"]
)
def test_the_names_the_service_is_served_under_pass(host: str) -> None:
    assert GUARD.refusal(request("GET", host)) is None


@pytest.mark.parametrize("host", ["evil.example", "localhost.evil.example", "", None, "[::1"])
def test_any_other_host_is_a_400_naming_the_setting(host: str | None) -> None:
    refusal = GUARD.refusal(request("GET", host))
    assert refusal is not None
    assert refusal.status_code == 400
    assert "CHARNN_ALLOWED_HOSTS" in refusal.detail


def test_a_star_accepts_any_host() -> None:
    assert RequestGuard(parse_hosts("*")).refusal(request("GET", "anything.example")) is None


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost:8000",
        "http://LOCALHOST:8000",
    ],
)
def test_the_services_own_pages_may_change_things(origin: str) -> None:
    assert GUARD.refusal(request("POST", "localhost:8000", origin)) is None


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "http://localhost:3000",  # another server on this machine is another site
        "null",  # a sandboxed frame, a file:// page
        "http://localhost:8000/path",  # no origin has a path
        "garbage",
    ],
)
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_pages_from_elsewhere_may_not(origin: str, method: str) -> None:
    refusal = GUARD.refusal(request(method, "localhost:8000", origin))
    assert refusal is not None
    assert refusal.status_code == 403
    assert "cross-site request refused" in refusal.detail


def test_reading_from_elsewhere_is_left_to_the_browser() -> None:
    # a page elsewhere cannot read the answer without CORS headers, which charnn never sends
    assert GUARD.refusal(request("GET", "localhost:8000", "https://evil.example")) is None


def test_behind_a_proxy_the_host_has_no_port_and_the_name_decides() -> None:
    assert (
        GUARD.refusal(request("POST", "charnn.example.com", "https://charnn.example.com")) is None
    )
    refusal = GUARD.refusal(request("POST", "charnn.example.com", "https://evil.example"))
    assert refusal is not None
