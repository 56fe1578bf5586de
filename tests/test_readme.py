"""The README is for users: its examples must run and its configuration table be whole."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from app.settings import Settings

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_configuration_table_lists_every_setting() -> None:
    table = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(CHARNN_[A-Z_]+)` \|", table, re.MULTILINE))
    settings = {f"CHARNN_{name.upper()}" for name in Settings.model_fields}
    assert documented == settings


def test_the_curl_examples_work_against_a_live_server(
    start_server: Callable[..., object], tmp_path: Path
) -> None:
    server = start_server()
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.DOTALL)
    script = "set -euo pipefail\n" + "\n".join(blocks)
    script = script.replace("localhost:8000", f"127.0.0.1:{server.port}")  # type: ignore[attr-defined]

    run = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=240
    )

    assert run.returncode == 0, run.stderr + run.stdout
    assert '"outputs":["ohlol"]' in run.stdout
    assert '"outputs":["ohlol","ohlo"]' in run.stdout  # the top-k example
    assert '"char_accuracy":1.0,"seq_accuracy":1.0,"characters":5' in run.stdout  # evaluate
    assert '"text":"the quick brown fox' in run.stdout
    assert '"outputs":["Japanese","Italian"],"details":null,"labels":[{"label":"Japanese"' in (
        run.stdout
    )  # the classifier
    assert '"model_name":"hello-copy","version":1' in run.stdout
    assert "event: end" in run.stdout
    assert '"kind":"text","format":"text","sha256":' in run.stdout  # the uploaded dataset
    assert '"model_name":"fox-corpus"' in run.stdout
    assert '"after":10,"limit":2,"next_after":12}' in run.stdout  # the epochs page
