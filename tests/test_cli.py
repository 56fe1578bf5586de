"""The ``charnn`` command as a client of a live server: output people read, exit codes
scripts rely on (0 done, 1 job failed, 2 refused, 3 no server)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer

from app.cli import cli
from app.ml.checkpoint import Checkpoint
from app.ml.hyperparameters import Hyperparameters
from app.store.layout import MODEL_NAME_PATTERN
from tests.conftest import LiveServer, long_text

CHARNN = [sys.executable, "-m", "app.cli"]


def environment(server: LiveServer | None) -> dict[str, str]:
    """This environment less its CHARNN_* and whatever tells rich how to draw, plus the URL."""
    drawing = ("COLUMNS", "LINES", "TERM", "FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARNN_") and k not in drawing}
    env["CHARNN_URL"] = server.base_url if server else "http://127.0.0.1:9"
    env.update(LANG="C.UTF-8", PYTHONIOENCODING="utf-8")
    return env


def charnn(server: LiveServer | None, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The CLI with its output piped, as a script runs it."""
    return subprocess.run(
        [*CHARNN, *args],
        cwd=cwd,
        env=environment(server) | {"COLUMNS": "80"},
        capture_output=True,
        text=True,
        timeout=120,
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


SURNAMES = [
    ("Nakamura", "Japanese"), ("Tanaka", "Japanese"), ("Sato", "Japanese"),
    ("Yamamoto", "Japanese"), ("Rossi", "Italian"), ("Bianchi", "Italian"),
    ("Romano", "Italian"), ("Ricci", "Italian"), ("Ivanov", "Russian"),
    ("Petrov", "Russian"), ("Smirnov", "Russian"), ("Volkov", "Russian"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("names.csv", "input,label\n" + "".join(f"{n},{lab}\n" for n, lab in SURNAMES)),
        (
            "names.jsonl",
            "".join(json.dumps({"input": n, "label": lab}) + "\n" for n, lab in SURNAMES),
        ),
    ],
)
def test_a_labels_file_trains_a_classifier_and_predict_prints_labels(
    server: LiveServer, tmp_path: Path, name: str, content: str
) -> None:
    (tmp_path / name).write_text(content)
    hyperparameters = ["--cell", "gru", "--embedding-size", "16", "--hidden-size", "32"]
    hyperparameters += ["--num-layers", "1", "--bidirectional", "--learning-rate", "0.01"]
    hyperparameters += ["--epochs", "30", "--validation-fraction", "0", "--seed", "0"]

    trained = charnn(server, "train", "names", name, *hyperparameters, "--follow", cwd=tmp_path)
    plain = charnn(server, "predict", "names", "Nakamura", "Rossi", cwd=tmp_path)
    top = charnn(server, "predict", "names", "Ivanov", "--top-k", "2", cwd=tmp_path)

    assert trained.returncode == 0, trained.stderr
    assert "names version 1 is ready" in trained.stdout
    assert plain.returncode == 0, plain.stderr
    lines = [line.split("\t") for line in plain.stdout.splitlines()]
    assert [label for label, _ in lines] == ["Japanese", "Italian"]
    assert all(0.5 < float(probability) <= 1 for _, probability in lines)
    label, probability, best = top.stdout.strip().split("\t")
    assert label == "Russian"
    assert best.startswith(f"Russian={probability}  ")


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


# --- at 80 columns, on a terminal and piped ---------------------------------------------------

CSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
SGR = re.compile(r"\x1b\[[0-9;]*m")  # colours and styles: within a line
CLOCK = re.compile(r"\d+:\d\d:\d\d")


def screen_lines(raw: str) -> list[str]:
    """What a terminal shows, line by line: styles dropped, every cursor move, carriage
    return and newline a line break (so a redrawn frame is a line of its own)."""
    plain = CSI.sub("\n", SGR.sub("", raw))
    return [line for line in re.split(r"[\r\n]+", plain) if line.strip()]


class Terminal:
    """The ``charnn`` CLI on a pseudo-terminal of 80 columns, as a person runs it."""

    def __init__(self, server: LiveServer, *args: str, cwd: Path) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        env = environment(server)
        env.update(COLUMNS="80", LINES="24", TERM="xterm-256color")
        self.process = subprocess.Popen(
            [*CHARNN, *args], cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave
        )
        os.close(slave)
        self.output = ""

    def read_until(self, done: Callable[[str], bool], timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while not done(self.output) and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: the CLI exited and closed its side
                break
            if not chunk:
                break
            self.output += chunk.decode(errors="replace")
        return self.output

    def wait(self) -> int:
        self.read_until(lambda _: False, timeout=30)  # until the CLI closes the terminal
        os.close(self.master)
        return self.process.wait(timeout=30)


def test_on_a_terminal_the_bar_and_eta_fit_80_columns_and_ctrl_c_leaves_the_job_running(
    server: LiveServer, tmp_path: Path
) -> None:
    (tmp_path / "story.txt").write_text(long_text(8000))
    terminal = Terminal(
        server,
        *("train", "story", "story.txt", "--text", "--follow", "--epochs", "40"),
        *("--cell", "gru", "--hidden-size", "256", "--embedding-size", "16", "--num-layers"),
        *("1", "--seq-len", "64", "--batch-size", "16", "--validation-fraction", "0"),
        cwd=tmp_path,
    )
    # a text model's sample is 64 characters: more than 80 columns leave beside the bar
    terminal.read_until(lambda seen: "3/40" in seen and CLOCK.search(seen.split("3/40")[-1]))
    terminal.process.send_signal(signal.SIGINT)
    returncode = terminal.wait()

    lines = screen_lines(terminal.output)
    frames = [line for line in lines if "/40" in line and "━" in line]
    job_id = lines[0].split()[1]  # "job <id> queued"
    assert returncode == 130, terminal.output
    assert frames, lines
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    assert any("3/40" in frame and CLOCK.search(frame) and "…" in frame for frame in frames)
    message = " ".join(" ".join(lines[-4:]).split())  # wrapped at 80 columns
    assert "keeps running on the server" in message
    assert f"charnn cancel {job_id}" in message
    assert server.http.get(f"/jobs/{job_id}").json()["status"] in ("queued", "running")


def test_piped_follow_prints_one_plain_line_per_epoch_and_resumes_across_a_restart(
    start_server: Callable[..., LiveServer], long_job: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    server = start_server()
    job_id = server.http.post("/train", json=long_job("story", 24, characters=3000)).json()["id"]
    out = tmp_path / "out.txt"
    with out.open("w") as stdout:
        follow = subprocess.Popen(
            [*CHARNN, "follow", job_id[:6]],  # a start of the id is enough
            cwd=tmp_path,
            env=environment(server),
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while out.read_text().count("\n") < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        status_at_stop = server.http.get(f"/jobs/{job_id}").json()["status"]
        server.stop()  # the stream ends with the server; the job waits in the registry
        restarted = start_server(store_dir=server.store_dir, port=server.port)
        _, stderr = follow.communicate(timeout=120)

    lines = out.read_text().splitlines()
    assert follow.returncode == 0, stderr
    assert status_at_stop == "running"
    assert restarted.http.get(f"/jobs/{job_id}").json()["status"] == "succeeded"
    assert [line.split()[1] for line in lines[:-1]] == [f"{n}/24" for n in range(1, 25)]
    assert all(line.startswith("story ") and "eta " in line for line in lines[:-1])
    assert lines[-1] == "story version 1 is ready"
    assert "\x1b" not in out.read_text()


# --- for scripts ------------------------------------------------------------------------------


def test_scripts_get_json_ids_and_full_values(server: LiveServer, tmp_path: Path) -> None:
    (tmp_path / "pairs.csv").write_text("hello,ohlol\n")
    trained = charnn(server, "train", "hello", "pairs.csv", "-q", "--follow", cwd=tmp_path)
    job_id = trained.stdout.strip()
    queued = charnn(server, "train", "other", "pairs.csv", "--json", cwd=tmp_path)
    other_id = json.loads(queued.stdout)["id"]
    cancelled = charnn(server, "cancel", other_id[:8], "-q", cwd=tmp_path)
    # a running job stops within an epoch: wait, so that what is listed stays as listed
    deadline = time.monotonic() + 60
    while server.http.get(f"/jobs/{other_id}").json()["finished_at"] is None:
        assert time.monotonic() < deadline, "the cancelled job never ended"
        time.sleep(0.1)

    listed = charnn(server, "jobs", cwd=tmp_path)
    ids = charnn(server, "jobs", "-q", cwd=tmp_path)
    as_json = charnn(server, "jobs", "--json", cwd=tmp_path)
    one = charnn(server, "jobs", job_id[:5], cwd=tmp_path)
    # ids are random: whatever start they share (often none) is ambiguous
    shared = os.path.commonprefix([job_id, other_id])
    ambiguous = charnn(server, "jobs", shared, cwd=tmp_path)
    unknown = charnn(server, "follow", "zz", cwd=tmp_path)
    models = charnn(server, "models", "-q", cwd=tmp_path)
    versions = charnn(server, "models", "hello", "--json", cwd=tmp_path)
    predicted = charnn(server, "predict", "hello", "hello", "--json", cwd=tmp_path)
    streamed = charnn(server, "follow", job_id, "--json", cwd=tmp_path)

    assert trained.returncode == 0, trained.stderr
    assert re.fullmatch(r"[0-9a-f]{32}", job_id)
    assert cancelled.stdout.strip() == other_id
    assert listed.stdout.splitlines()[0].split("\t") == [
        *("id", "model", "status", "epoch", "version", "created")
    ]
    assert {line.split("\t")[0] for line in listed.stdout.splitlines()[1:]} == {job_id, other_id}
    assert set(ids.stdout.split()) == {job_id, other_id}
    assert json.loads(as_json.stdout) == server.http.get("/jobs?limit=20").json()
    assert json.loads(one.stdout) == server.http.get(f"/jobs/{job_id}").json()
    assert ambiguous.returncode == 2
    assert job_id in ambiguous.stderr
    assert other_id in ambiguous.stderr
    assert unknown.returncode == 2
    assert "no job id starts with 'zz'" in unknown.stderr
    assert models.stdout.split() == ["hello"]
    assert json.loads(versions.stdout) == server.http.get("/models/hello").json()
    assert json.loads(predicted.stdout)["outputs"] == ["ohlol"]
    events = [json.loads(line) for line in streamed.stdout.splitlines()]
    assert [event["epoch"] for event in events if "loss" in event] == list(range(1, 16))
    assert events[-1] == server.http.get(f"/jobs/{job_id}").json()


def test_a_servers_message_is_printed_as_it_is_brackets_and_all(
    server: LiveServer, tmp_path: Path
) -> None:
    result = charnn(server, "models", "Not-A-Slug", cwd=tmp_path)

    assert result.returncode == 2
    assert "refused (422)" in result.stderr
    assert MODEL_NAME_PATTERN in result.stderr  # ^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$


def test_download_import_and_delete(
    server: LiveServer, tmp_path: Path, hello_model: Checkpoint, publish_model: Any
) -> None:
    publish_model(server.store_dir, "hello", hello_model)

    downloaded = charnn(server, "download", "hello", "--output", "ckpt", cwd=tmp_path)
    imported = charnn(server, "import", "copy", "ckpt", "-q", cwd=tmp_path)
    again = charnn(server, "import", "copy", "ckpt", "--json", cwd=tmp_path)
    predicted = charnn(server, "predict", "copy", "hello", "--version", "2", cwd=tmp_path)
    deleted_version = charnn(server, "delete", "copy", "--version", "1", cwd=tmp_path)
    deleted_model = charnn(server, "delete", "hello", cwd=tmp_path)

    assert downloaded.returncode == 0, downloaded.stderr
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "checkpoint.json",
        "weights.safetensors",
    ]
    assert imported.stdout.strip() == "1"
    assert json.loads(again.stdout)["version"] == 2
    assert predicted.stdout.strip() == "ohlol"
    assert deleted_version.stdout.strip() == "deleted copy version 1"
    assert [v["version"] for v in server.http.get("/models/copy").json()["versions"]] == [2]
    assert deleted_model.returncode == 0
    assert server.http.get("/models/hello").status_code == 404


def test_version_completion_and_every_hyperparameter(tmp_path: Path) -> None:
    version = charnn(None, "--version", cwd=tmp_path)
    completion = charnn(None, "--show-completion", "bash", cwd=tmp_path)
    help_text = charnn(None, "--help", cwd=tmp_path)

    options = {
        param.name
        for param in typer.main.get_command(cli).commands["train"].params  # type: ignore[attr-defined]
    }
    assert version.stdout.startswith("charnn ")
    assert completion.returncode == 0
    assert "complete" in completion.stdout
    assert "--install-completion" in help_text.stdout
    assert set(Hyperparameters.model_fields) <= options


def test_evaluate_a_version_on_a_file_or_its_held_out_split(
    server: LiveServer, tmp_path: Path, wait_for_job: Callable[..., dict[str, Any]]
) -> None:
    text = long_text(2000)
    body = {
        "model_name": "words",
        "data": {"text": text},
        "hyperparameters": {"hidden_size": 16, "epochs": 2, "seq_len": 50, "seed": 0},
    }
    job = server.http.post("/train", json=body).json()
    assert wait_for_job(server.http, job["id"], timeout=120)["status"] == "succeeded"
    (tmp_path / "sample.txt").write_text(text[:500])

    on_file = charnn(server, "evaluate", "words", "--text", "sample.txt", cwd=tmp_path)
    held_out = charnn(
        server, "evaluate", "words:1", "--split", "validation", "--json", cwd=tmp_path
    )
    no_source = charnn(server, "evaluate", "words", cwd=tmp_path)
    no_version = charnn(server, "evaluate", "words:2", "--split", "validation", cwd=tmp_path)

    assert on_file.returncode == 0, on_file.stderr
    lines = on_file.stdout.splitlines()
    assert lines[0] == "words version 1 on data: 499 characters in 10 sequences"
    assert re.fullmatch(r"nll \d+\.\d{4} nats/char  \d+\.\d{4} bits/char", lines[1])
    assert lines[2].startswith("character accuracy ")
    assert held_out.returncode == 0, held_out.stderr
    answer = json.loads(held_out.stdout)
    assert (answer["source"], answer["sequences"]) == ("validation", 4)  # 10% of 40 windows
    assert no_source.returncode == 2
    assert "give one of --text FILE, --data FILE or --split validation" in no_source.stderr
    assert no_version.returncode == 2
    assert "has no version 2" in no_version.stderr


def test_upload_a_dataset_train_on_it_list_and_delete_it(
    server: LiveServer, tmp_path: Path
) -> None:
    (tmp_path / "pairs.csv").write_text("input,target\nhello,ohlol\n")

    uploaded = charnn(server, "datasets", "upload", "pairs.csv", "--name", "hi", "-q", cwd=tmp_path)
    dataset = uploaded.stdout.strip()
    trained = charnn(
        server,
        "train",
        "hello",
        "--dataset",
        dataset,
        "--architecture",
        "rnn_cell",
        "--learning-rate",
        "0.1",
        "--seed",
        "1",
        "--follow",
        cwd=tmp_path,
    )
    listed = charnn(server, "datasets", "list", cwd=tmp_path)
    shown = charnn(server, "datasets", "show", dataset, cwd=tmp_path)
    scored = charnn(server, "evaluate", "hello", "--dataset", dataset, "--json", cwd=tmp_path)
    deleted = charnn(server, "datasets", "delete", dataset, cwd=tmp_path)
    both = charnn(server, "train", "hello", "pairs.csv", "--dataset", dataset, cwd=tmp_path)

    assert uploaded.returncode == 0, uploaded.stderr
    assert re.fullmatch(r"[0-9a-f]{32}", dataset)
    assert trained.returncode == 0, trained.stderr
    assert "hello version 1 is ready" in trained.stdout
    assert dataset in listed.stdout
    assert "hi" in listed.stdout
    assert json.loads(shown.stdout)["kind"] == "pairs"
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["source"] == "dataset"
    assert json.loads(scored.stdout)["characters"] == 5
    assert (deleted.returncode, deleted.stdout.strip()) == (0, f"deleted dataset {dataset}")
    assert both.returncode == 2
    assert "one of them" in both.stderr


def test_train_with_a_budget_follows_steps_and_shows_why_it_stopped(
    start_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    server = start_server(min_checkpoint_every_steps=1, event_poll_seconds=0.05)
    (tmp_path / "story.txt").write_text(long_text(40_000))
    # the text defaults' GRU: 60 steps of 32 x 100 characters, a report 10 steps into each
    # epoch, shown if the stream polls before the next (progress is news, not history)
    budget = ["--max-steps", "60", "--checkpoint-every-steps", "10", "--lr-schedule", "cosine"]

    trained = charnn(
        server, "train", "story", "story.txt", "--text", *budget, "--seed", "1", "--follow",
        cwd=tmp_path,
    )  # fmt: skip
    versions = charnn(server, "models", "story", cwd=tmp_path)

    assert trained.returncode == 0, trained.stderr
    lines = trained.stdout.splitlines()
    steps = [line.split(" step ")[1].split() for line in lines if " step " in line]
    assert steps, trained.stdout
    # 12 steps an epoch: the 10th of each (10, 22, 34...), as the epoch fraction says
    assert all(int(words[0]) % 12 == 10 and "bpc" in words for words in steps), trained.stdout
    assert "story version 1 is ready" in lines[-1]
    header, row = versions.stdout.splitlines()
    assert header.split("\t")[6:9] == ["best", "stopped", "validation"]
    best = server.http.get("/models/story/versions/1").json()["best_epoch"]
    assert row.split("\t")[6:8] == [str(best), "max_steps"]
    assert "bpc)" in row.split("\t")[8]
