"""The ``charnn`` command as a client of a live server: output people read, exit codes
scripts rely on (0 done, 1 job failed, 2 refused, 3 no server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import LiveServer

CHARNN = [sys.executable, "-m", "app.cli"]


def charnn(server: LiveServer | None, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARNN_")}
    env["CHARNN_URL"] = server.base_url if server else "http://127.0.0.1:9"
    env["COLUMNS"] = "200"  # one line per progress update, tables unwrapped
    return subprocess.run(
        [*CHARNN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def server(start_server: Callable[..., LiveServer]) -> LiveServer:
    return start_server()


def test_train_follow_then_predict(server: LiveServer, tmp_path: Path) -> None:
    (tmp_path / "pairs.csv").write_text("input,target\nhello,ohlol\n")

    trained = charnn(
        server,
        "train",
        "hello",
        "pairs.csv",
        "--architecture",
        "rnn_cell",
        "--learning-rate",
        "0.1",
        "--seed",
        "1",
        "--follow",
        cwd=tmp_path,
    )
    predicted = charnn(server, "predict", "hello", "hello", "hel", cwd=tmp_path)

    assert trained.returncode == 0, trained.stderr
    assert "15/15" in trained.stdout
    assert "'hello' -> 'ohlol'" in trained.stdout
    assert "hello version 1 is ready" in trained.stdout
    assert predicted.returncode == 0
    assert predicted.stdout.splitlines() == ["ohlol", "ohl"]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("pairs.tsv", "hello\tohlol\n"),
        ("pairs.jsonl", '{"input": "hello", "target": "ohlol"}\n'),
    ],
)
def test_pairs_files_in_tsv_and_jsonl(
    server: LiveServer, tmp_path: Path, name: str, content: str
) -> None:
    (tmp_path / name).write_text(content)

    result = charnn(server, "train", "hello", name, "--epochs", "3", "--follow", cwd=tmp_path)

    assert result.returncode == 0, result.stderr


def test_models_and_jobs_are_listed(server: LiveServer, tmp_path: Path) -> None:
    (tmp_path / "fox.txt").write_text("the quick brown fox jumps over the lazy dog. " * 4)
    charnn(server, "train", "fox", "fox.txt", "--epochs", "2", "--follow", cwd=tmp_path)

    models = charnn(server, "models", cwd=tmp_path)
    jobs = charnn(server, "jobs", cwd=tmp_path)
    generated = charnn(
        server, "generate", "fox", "the", "--length", "5", "--seed", "1", cwd=tmp_path
    )

    job_id = server.http.get("/jobs?model_name=fox").json()["items"][0]["id"]
    one = json.loads(charnn(server, "jobs", job_id, cwd=tmp_path).stdout)
    full = json.loads(charnn(server, "jobs", job_id, "--history", cwd=tmp_path).stdout)

    assert "fox" in models.stdout
    assert "succeeded" in jobs.stdout
    assert (one["id"], one["history"]) == (job_id, None)
    assert [e["epoch"] for e in full["history"]] == [1, 2]
    assert generated.returncode == 0
    assert generated.stdout.startswith("the")
    assert len(generated.stdout.strip()) == len("the") + 5


def test_a_refused_request_exits_2_with_the_servers_words(
    server: LiveServer, tmp_path: Path
) -> None:
    (tmp_path / "bad.csv").write_text("hello,ohl\n")

    result = charnn(server, "train", "hello", "bad.csv", cwd=tmp_path)

    assert result.returncode == 2
    assert "refused (422)" in result.stderr
    assert "data.pairs.0: input has 5 characters but target has 3" in result.stderr


def test_a_bad_data_file_exits_2_before_any_request(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text("not json\n")

    result = charnn(None, "train", "hello", "bad.jsonl", cwd=tmp_path)

    assert result.returncode == 2
    assert "bad.jsonl:1: expected" in result.stderr


def test_no_server_exits_3(tmp_path: Path) -> None:
    result = charnn(None, "models", cwd=tmp_path)

    assert result.returncode == 3
    assert "server unavailable" in result.stderr


def test_a_job_that_does_not_succeed_exits_1(server: LiveServer, tmp_path: Path) -> None:
    (tmp_path / "pairs.csv").write_text("hello,ohlol\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARNN_")}
    env["CHARNN_URL"] = server.base_url
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        follow = subprocess.Popen(
            [*CHARNN, "train", "slow", "pairs.csv", "--epochs", "5000", "--follow"],
            cwd=tmp_path,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
        deadline = time.monotonic() + 30
        while "queued" not in out.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        job_id = out.read_text().split()[1]  # "job <id> queued"

        server.http.post(f"/jobs/{job_id}/cancel")
        follow.wait(timeout=60)

    assert follow.returncode == 1
    assert "job cancelled" in err.read_text()
