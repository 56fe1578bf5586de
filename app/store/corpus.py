"""Reading an uploaded dataset file once, in chunks, into what training needs.

- text: every character becomes its id in the sorted vocabulary, written as uint16
  little-endian (``TEXT_IDS``) for workers to memory-map. Two passes over the file:
  the first checks the UTF-8 and finds the vocabulary, the second writes the ids.
  Each chunk is decoded to UTF-32 code points and handled by numpy, so memory stays at
  a few chunks whatever the file's size, and no Python string per character is made.
- pairs (input,target) and labels (input,label): rows from CSV, TSV or JSONL (as
  ``app.datafiles`` reads them), checked line by line and written normalised as JSONL
  (``ROWS``), one ``{"input", "target"|"label"}`` object per line.

A byte order mark at the file's start (Excel and Notepad write one) says how the file is
encoded; it is not a character of the data, and would hide a CSV's header row.

Errors name the line (rows) or the byte offset (UTF-8) of the first problem.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from app.ml.errors import DataError
from app.ml.vocab import MAX_VOCAB_SIZE, label_problem

DatasetKind = Literal["text", "pairs", "labels"]
DatasetFormat = Literal["text", "csv", "tsv", "jsonl"]
TEXT_IDS = "ids.u16"
ROWS = "rows.jsonl"
IDS_DTYPE = np.dtype("<u2")  # the vocabulary has at most MAX_VOCAB_SIZE (1024) characters
CHUNK_BYTES = 1024 * 1024  # its code points, ids and copies stay within tens of MB
FIELD = ""  # the file is the whole request body: its errors name no field within it
HEADERS = {"pairs": ["input", "target"], "labels": ["input", "label"]}
BOM = "\ufeff"


@dataclass
class Summary:
    """What a file holds: its characters (of inputs, for rows), rows, and vocabularies."""

    characters: int = 0
    examples: int = 0
    longest: int = 0  # the longest row's input
    input_chars: list[str] = field(default_factory=list)
    output_chars: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)


def decoded_chunks(path: Path) -> Iterator[str]:
    """The file as text, a chunk at a time; DataError naming the first bad byte's offset."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0  # bytes of the file before the decoder's buffer
    at_start = True  # no character decoded yet: a byte order mark would be dropped
    with path.open("rb") as handle:
        while True:
            chunk = handle.read(CHUNK_BYTES)
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                raise DataError(
                    FIELD, f"is not UTF-8: byte {offset - pending + exc.start} ({exc.reason})"
                ) from None
            if at_start and text:
                text, at_start = text.removeprefix(BOM), False
            yield text
            offset += len(chunk)
            if not chunk:
                return


def code_points(text: str) -> npt.NDArray[np.uint32]:
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


def scan_text(path: Path) -> Summary:
    """First pass: the characters and vocabulary of a text file."""
    seen = np.zeros(0, dtype=np.uint32)
    characters = 0
    for text in decoded_chunks(path):
        points = code_points(text)
        characters += len(points)
        seen = np.union1d(seen, np.unique(points))
        if len(seen) > MAX_VOCAB_SIZE:
            raise DataError(
                FIELD, f"has more than {MAX_VOCAB_SIZE} distinct characters (a vocabulary's limit)"
            )
    if characters < 2:
        raise DataError(FIELD, "needs at least 2 characters to learn a next character")
    chars = [chr(c) for c in seen.tolist()]
    return Summary(characters=characters, input_chars=chars, output_chars=chars)


def write_text_ids(source: Path, target: Path, chars: list[str]) -> None:
    """Second pass: each character's index in ``chars`` (sorted), as uint16 LE."""
    vocab = np.array([ord(c) for c in chars], dtype=np.uint32)
    with target.open("xb") as out:
        for text in decoded_chunks(source):
            out.write(np.searchsorted(vocab, code_points(text)).astype(IDS_DTYPE).tobytes())


def read_rows(path: Path, kind: DatasetKind, fmt: DatasetFormat) -> Iterator[tuple[int, str, str]]:
    """(line, input, target-or-label) for every row; DataError naming a bad line."""
    for _ in decoded_chunks(path):  # the UTF-8 check, with its byte offset, first
        pass
    with path.open(encoding="utf-8-sig", newline="") as handle:  # without a BOM, as above
        if fmt == "jsonl":
            yield from _jsonl_rows(handle, HEADERS[kind][1])
        else:
            yield from _delimited_rows(handle, "\t" if fmt == "tsv" else ",", HEADERS[kind])


def _jsonl_rows(lines: Iterator[str], second: str) -> Iterator[tuple[int, str, str]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            value = (row["input"], row[second])
        except (ValueError, KeyError, TypeError):
            raise DataError(
                f"line {number}", f'expected {{"input": "...", "{second}": "..."}}'
            ) from None
        if not all(isinstance(v, str) for v in value):
            raise DataError(f"line {number}", f"input and {second} must be strings")
        yield number, value[0], value[1]


def _delimited_rows(
    lines: Iterator[str], delimiter: str, header: list[str]
) -> Iterator[tuple[int, str, str]]:
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    try:
        for row in reader:
            number = reader.line_num
            if not row:
                continue
            if len(row) != 2:
                raise DataError(f"line {number}", f"expected 2 columns, got {len(row)}")
            if number == 1 and [c.strip().lower() for c in row] == header:
                continue
            yield number, row[0], row[1]
    except csv.Error as exc:
        raise DataError(f"line {reader.line_num}", f"is not valid CSV: {exc}") from None


def write_rows(source: Path, target: Path, kind: DatasetKind, fmt: DatasetFormat) -> Summary:
    """Check every row and write them normalised; the summary of what was written."""
    inputs: set[str] = set()
    outputs: set[str] = set()
    summary = Summary()
    second = HEADERS[kind][1]
    with target.open("x", encoding="utf-8") as out:
        for number, source_text, other in read_rows(source, kind, fmt):
            _check_row(number, source_text, other, kind)
            inputs.update(source_text)
            outputs.update(other) if kind == "pairs" else outputs.add(other)
            summary.characters += len(source_text)
            summary.examples += 1
            summary.longest = max(summary.longest, len(source_text))
            out.write(json.dumps({"input": source_text, second: other}) + "\n")
    if not summary.examples:
        raise DataError(FIELD, "holds no rows")
    _check_vocab_size("inputs", inputs)
    summary.input_chars = sorted(inputs)
    if kind == "pairs":
        _check_vocab_size("targets", outputs)
        summary.output_chars = sorted(outputs)
    else:
        summary.labels = sorted(outputs)
    return summary


def _check_row(number: int, source: str, other: str, kind: DatasetKind) -> None:
    where = f"line {number}"
    if not source:
        raise DataError(where, "input is empty")
    if kind == "labels" and (problem := label_problem(other)):
        # refused here, naming the line, rather than by every job that trains on the file
        raise DataError(where, f"label {problem}" if other else "label is empty")
    if kind == "pairs" and len(source) != len(other):
        raise DataError(
            where,
            f"input has {len(source)} characters but target has {len(other)}; aligned pairs "
            "map each input character to one output character",
        )


def _check_vocab_size(what: str, chars: set[str]) -> None:
    if len(chars) > MAX_VOCAB_SIZE:
        raise DataError(
            FIELD, f"{what} use {len(chars)} distinct characters, at most {MAX_VOCAB_SIZE}"
        )
