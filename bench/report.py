"""docs/benchmarks.md from one run's numbers: tables, then each target with its ratio."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _target(name: str, value: str, bar: str, met: bool) -> str:
    return f"| {name} | {value} | {bar} | {'met' if met else '**missed**'} |"


def write_report(
    path: Path,
    *,
    raw: dict[str, dict[int, float]],
    loads: dict[str, dict[str, Any]],
    train: dict[str, float],
    start: dict[str, float],
    rss_mib: float,
    quick: bool,
    command: str,
    machine: str,
) -> None:
    lines = [
        "# Benchmarks",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {machine}, with `{command}`.",
        "Servers pinned to CPU 0 (`taskset`, `OMP_NUM_THREADS=1`, no access log), wrk pinned",
        "to CPU 1; each point "
        + (
            "is one 2 s run (--quick: a smoke test, not a measurement)"
            if quick
            else "is the median of three 10 s runs after a warm-up"
        )
        + ". The three servers of a model run at once and take turns, run by run;",
        "the training job (end to end, epoch to epoch: checkpoints and registry writes",
        "included) alternates with the plain loop. A ratio compares numbers of this run only.",
        "",
        "## Predict under load",
        "",
        "| model | server | concurrency | req/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for model, points in loads.items():
        for key, load in points.items():
            server, concurrency = key.split(" c=")
            lines.append(
                f"| {model} | {server} | {concurrency} | {load.rps:,.0f} | "
                f"{load.p50_ms:.2f} | {load.p99_ms:.2f} |"
            )
    lines += [
        "",
        "## Raw forward pass, in process, one thread",
        "",
        "| model | batch 1 (seq/s) | batch 16 (seq/s) |",
        "|---|---|---|",
    ]
    lines += [f"| {m} | {r[1]:,.0f} | {r[16]:,.0f} |" for m, r in raw.items()]

    tut, med = loads["tutorial"], loads["medium"]
    checks = [
        _target(
            "tutorial c=32 vs naive",
            f"{tut['charnn c=32'].rps / tut['naive c=32'].rps:.2f}x",
            ">= 2.5x",
            tut["charnn c=32"].rps >= 2.5 * tut["naive c=32"].rps,
        ),
        _target(
            "tutorial c=32 vs echo",
            f"{tut['charnn c=32'].rps / tut['echo c=32'].rps:.2f}x",
            ">= 0.75x",
            tut["charnn c=32"].rps >= 0.75 * tut["echo c=32"].rps,
        ),
        _target(
            "tutorial c=1 p50 minus echo p50",
            f"{tut['charnn c=1'].p50_ms - tut['echo c=1'].p50_ms:+.2f} ms",
            "<= 0.5 ms",
            tut["charnn c=1"].p50_ms - tut["echo c=1"].p50_ms <= 0.5,
        ),
        _target(
            "medium c=32 vs naive",
            f"{med['charnn c=32'].rps / med['naive c=32'].rps:.2f}x",
            ">= 2.5x",
            med["charnn c=32"].rps >= 2.5 * med["naive c=32"].rps,
        ),
        _target(
            "medium c=32 vs raw batch-16 forward",
            f"{med['charnn c=32'].rps / raw['medium'][16]:.2f}x",
            ">= 0.75x",
            med["charnn c=32"].rps >= 0.75 * raw["medium"][16],
        ),
        _target(
            "medium c=32 p99 vs naive p99",
            f"{med['charnn c=32'].p99_ms:.1f} vs {med['naive c=32'].p99_ms:.1f} ms",
            "below",
            med["charnn c=32"].p99_ms < med["naive c=32"].p99_ms,
        ),
        _target(
            "training chars/s vs plain loop",
            f"{train['job'] / train['plain']:.2f}x ({train['job']:,.0f} vs {train['plain']:,.0f})",
            ">= 0.9x",
            train["job"] >= 0.9 * train["plain"],
        ),
        _target(
            "cold start to /readyz",
            f"{start['cold_start_s']:.2f} s (its imports alone: {start['import_floor_s']:.2f} s)",
            "< 3 s",
            start["cold_start_s"] < 3,
        ),
        _target(
            "first predict, unloaded medium version",
            f"{start['first_predict_s'] * 1000:.0f} ms",
            "< 300 ms",
            start["first_predict_s"] < 0.3,
        ),
        _target(
            "API RSS, 20 medium versions loaded", f"{rss_mib:.0f} MiB", "< 1024 MiB", rss_mib < 1024
        ),
    ]
    lines += [
        "",
        "## Targets (ratios within this run)",
        "",
        "| target | measured | bar | |",
        "|---|---|---|---|",
        *checks,
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
