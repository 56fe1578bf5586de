"""Training data files for the CLI: pairs with targets or labels, in CSV, TSV and JSONL."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.datafiles import DataFileError, read_training_data

LABELED = {
    "pairs": [{"input": "Sato", "label": "Japanese"}, {"input": "Rossi", "label": "Italian"}]
}


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("names.csv", "input,label\nSato,Japanese\nRossi,Italian\n"),
        ("names.tsv", "Input\tLabel\nSato\tJapanese\nRossi\tItalian\n"),
        (
            "names.jsonl",
            '{"input": "Sato", "label": "Japanese"}\n\n{"input": "Rossi", "label": "Italian"}\n',
        ),
    ],
)
def test_a_label_header_or_key_makes_labeled_pairs(tmp_path: Path, name: str, content: str) -> None:
    (tmp_path / name).write_text(content)

    assert read_training_data(tmp_path / name) == LABELED


def test_a_csv_without_a_label_header_holds_targets(tmp_path: Path) -> None:
    (tmp_path / "pairs.csv").write_text("hello,ohlol\n")

    assert read_training_data(tmp_path / "pairs.csv") == {
        "pairs": [{"input": "hello", "target": "ohlol"}]
    }


def test_a_jsonl_line_without_the_first_lines_key_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "names.jsonl"
    path.write_text('{"input": "Sato", "label": "Japanese"}\n{"input": "ab", "target": "ba"}\n')

    with pytest.raises(
        DataFileError, match=r'names.jsonl:2: expected \{"input": ..., "label": ...\}'
    ):
        read_training_data(path)
