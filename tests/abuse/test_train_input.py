"""No POST /train body answers 5xx: each hostile one is refused with a 4xx, nothing queued.

Against a real uvicorn. Each of these answered 500 (or worse) once, or would have:
more distinct characters than a vocabulary holds, lone surrogates (JSON's ``\\udXXX``
escapes), numbers beyond every bound, and one long pair among many short ones, which
padded to the longest would have made the API build a tensor a thousand times the
size of the data.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.conftest import LiveServer

MANY = "".join(chr(0x4E00 + i) for i in range(1500))  # more than a vocabulary's 1024


def body(data: str, hyperparameters: str = "{}", vocab: str = "null") -> str:
    return (
        f'{{"model_name": "hostile", "data": {data}, "vocab": {vocab}, '
        f'"hyperparameters": {hyperparameters}}}'
    )


HELLO = '{"pairs": [{"input": "hello", "target": "ohlol"}]}'
LONG_AMONG_SHORT = json.dumps(
    {
        "pairs": [
            {"input": "a" * 100_000, "target": "b" * 100_000},
            *[{"input": "a", "target": "b"}] * 999,
        ]
    }
)
HOSTILE: dict[str, tuple[str, int]] = {
    "distinct-characters-in-text": (body(json.dumps({"text": MANY})), 422),
    "distinct-characters-in-pairs": (
        body(json.dumps({"pairs": [{"input": MANY, "target": "a" * 1500}]})),
        422,
    ),
    "vocabulary-beyond-the-limit": (
        body(HELLO, vocab=json.dumps({"input": list(MANY), "output": list("hlo")})),
        422,
    ),
    "surrogate-in-text": (body('{"text": "ab\\ud800ab"}'), 422),
    "surrogate-in-pair": (body('{"pairs": [{"input": "h\\udc00", "target": "oh"}]}'), 422),
    "surrogate-in-vocabulary": (
        body('{"text": "abab"}', vocab='{"input": ["a", "b", "\\udc00"], "output": ["a"]}'),
        422,
    ),
    "epochs-10e30": (body(HELLO, '{"epochs": 1000000000000000000000000000000}'), 422),
    "epochs-1e400": (body(HELLO, '{"epochs": 1e400}'), 422),
    "seed-beyond-int64": (body(HELLO, '{"seed": 9223372036854775808}'), 422),
    "learning-rate-nan": (body(HELLO, '{"learning_rate": NaN}'), 422),
    "grad-clip-infinity": (body(HELLO, '{"grad_clip": Infinity}'), 422),
    "a-5000-digit-integer": (body(HELLO, '{"epochs": ' + "9" * 5000 + "}"), 400),
    "one-long-pair-among-short-ones": (body(LONG_AMONG_SHORT), 422),
}


def test_13_hostile_bodies_are_each_refused_with_a_4xx_and_none_queued(
    start_server: Callable[..., LiveServer],
) -> None:
    server = start_server()

    answers = {
        name: server.http.post(
            "/train", content=content, headers={"Content-Type": "application/json"}
        ).status_code
        for name, (content, _) in HOSTILE.items()
    }

    assert answers == {name: status for name, (_, status) in HOSTILE.items()}
    assert len(answers) == 13
    assert server.http.get("/jobs").json()["total"] == 0
