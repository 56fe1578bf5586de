"""Training data from files, for the CLI: pairs from CSV, TSV or JSONL, or plain text.

- ``.csv`` / ``.tsv``: two columns, input then target; a first row ``input,target`` is a
  header and skipped. A header ``input,label`` makes the rows labeled sequences, for a
  classifier.
- ``.jsonl``: one ``{"input": ..., "target": ...}`` object per line, or
  ``{"input": ..., "label": ...}`` for a classifier (the first line decides).
- anything else (or ``text=True``): the whole file is plain text for next-character
  modelling.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any


class DataFileError(ValueError):
    pass


def read_training_data(path: Path, *, text: bool = False) -> dict[str, Any]:
    """The ``data`` object of a ``POST /train`` request."""
    suffix = path.suffix.lower()
    content = path.read_text(encoding="utf-8")
    if text or suffix not in (".csv", ".tsv", ".jsonl"):
        return {"text": content}
    if suffix == ".jsonl":
        return {"pairs": _jsonl_pairs(path, content)}
    return {"pairs": _delimited_pairs(path, content, "\t" if suffix == ".tsv" else ",")}


def _jsonl_pairs(path: Path, content: str) -> list[dict[str, str]]:
    pairs: list[dict[str, str]] = []
    second = "target"  # or "label", as the first row says
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not pairs and isinstance(row, dict) and "label" in row and "target" not in row:
                second = "label"
            pairs.append({"input": str(row["input"]), second: str(row[second])})
        except (ValueError, KeyError, TypeError) as exc:
            raise DataFileError(
                f'{path}:{number}: expected {{"input": ..., "{second}": ...}}, got {line[:80]!r}'
            ) from exc
    return pairs


def _delimited_pairs(path: Path, content: str, delimiter: str) -> list[dict[str, str]]:
    pairs = []
    second = "target"  # or "label", when the header says so
    for number, row in enumerate(csv.reader(content.splitlines(), delimiter=delimiter), 1):
        if not row:
            continue
        if len(row) != 2:
            raise DataFileError(f"{path}:{number}: expected 2 columns, got {len(row)}")
        header = [c.strip().lower() for c in row]
        if number == 1 and header in (["input", "target"], ["input", "label"]):
            second = header[1]
            continue
        pairs.append({"input": row[0], second: row[1]})
    return pairs
