"""schemathesis against a live charnn: every check, every phase, with and without a key.

A real server (``start_server``) with small limits, so that whatever training the
fuzzer gets accepted stays cheap, and two trained models, so that predict ("hello", on
pairs) and generate ("fox", on text) reach their models. Then the schemathesis CLI runs
as CI would run it (README, "Fuzzing"): ``--checks all --mode all``, the examples,
coverage, fuzzing and stateful phases, a fixed seed. Zero failures: every response
conforms to the OpenAPI schema, every schema-valid request is accepted and every
schema-violating one refused, apart from the rules JSON Schema cannot state
(``tests/fuzz/hooks.py``). Reports (JUnit XML, NDJSON events) land in test-artifacts/.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = Path("tests/fuzz/schemathesis.toml")  # relative to ROOT, as are the hooks it names
ARTIFACTS = ROOT / "test-artifacts"
ADMIN_KEY = "fuzz-admin-key-0123456789"
SEED = 1
MAX_EXAMPLES = 50  # per operation and phase: both runs together stay around a minute

# Small enough that any job the fuzzer gets accepted trains in a second or two.
LIMITS: dict[str, Any] = {
    "max_epochs": 5,
    "max_hidden_size": 32,
    "max_embedding_size": 32,
    "max_num_layers": 2,
    "max_seq_len": 64,
    "max_batch_size": 64,
    "max_training_pairs": 100,
    "max_training_chars": 2000,
    "max_training_cost": 1e8,
    "max_queued_jobs": 3,
    "max_predict_inputs": 16,
    "max_input_length": 256,
    "max_generate_length": 200,
    "predict_rate_per_key": 0,
}
MODELS = [
    {
        "model_name": "hello",
        "data": {"pairs": [{"input": "hello", "target": "ohlol"}]},
        "hyperparameters": {"epochs": 5, "seed": 0},
    },
    {
        "model_name": "fox",  # the model of the generate example
        "data": {"text": "the quick brown fox jumps over the lazy dog. "},
        "hyperparameters": {"epochs": 5, "hidden_size": 16, "num_layers": 1, "seed": 0},
    },
]


def schemathesis_command(base_url: str, name: str, headers: dict[str, str]) -> list[str]:
    """The README's command, with this run's reports."""
    command = [str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(CONFIG)]
    command += ["run", f"{base_url}/openapi.json", "--checks", "all", "--mode", "all"]
    command += ["--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES), "--no-color"]
    command += ["--report", "junit,ndjson"]
    command += ["--report-junit-path", str(ARTIFACTS / f"schemathesis-{name}.xml")]
    command += ["--report-ndjson-path", str(ARTIFACTS / f"schemathesis-{name}.ndjson")]
    for header, value in headers.items():
        command += ["--header", f"{header}: {value}"]
    return command


@pytest.mark.parametrize("keyed", [True, False], ids=["admin-key", "no-key"])
def test_schemathesis_finds_no_failure(start_server: Callable[..., Any], keyed: bool) -> None:
    settings = {**LIMITS, "api_keys": f"admin:{ADMIN_KEY}"} if keyed else LIMITS
    server = start_server(**settings)
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"} if keyed else {}
    server.http.headers.update(headers)
    for body in MODELS:
        response = server.http.post("/train", json=body)
        assert response.status_code == 202, response.text
        job = server.wait_for_job(response.json()["id"])
        assert job["status"] == "succeeded", job["error"]

    ARTIFACTS.mkdir(exist_ok=True)
    command = schemathesis_command(server.base_url, "admin-key" if keyed else "no-key", headers)
    started = time.monotonic()
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False
    )
    output, code = result.stdout + result.stderr, result.returncode
    print(f"schemathesis ran {time.monotonic() - started:.1f} s:\n{output[-1500:]}")  # noqa: T201

    assert code == 0, f"schemathesis exited {code}:\n{output[-8000:]}\nserver log:\n{server.log}"
