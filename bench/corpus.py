"""A synthetic English-like corpus of any size, written straight to a file.

No corpus is downloaded or committed: the benchmark makes its own. The text has structure a
character model can learn and a known floor: a lexicon of invented words (syllables drawn
per word), used with Zipf frequencies, in sentences of 4 to 14 words that start with a
capital and end with a full stop, paragraphs of a few sentences. A model that learns the
words and their frequencies goes far below the 5.7 bits of a uniform guess over its ~55
characters; one that learns nothing stays near it.
"""

from __future__ import annotations

import random
from itertools import accumulate
from pathlib import Path

ONSETS = ["", "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w"]
ONSETS += ["br", "ch", "cl", "dr", "fl", "gr", "pl", "sh", "st", "th", "tr"]
NUCLEI = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "ee", "oo"]
CODAS = ["", "", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ng", "ck"]
LEXICON_SIZE = 6000
CHUNK_WORDS = 200_000


def lexicon(rng: random.Random, size: int = LEXICON_SIZE) -> list[str]:
    """``size`` distinct invented words of one to four syllables, short ones commoner."""
    words: set[str] = set()
    while len(words) < size:
        syllables = rng.choices([1, 2, 3, 4], weights=[4, 5, 3, 1])[0]
        words.add(
            "".join(
                rng.choice(ONSETS) + rng.choice(NUCLEI) + rng.choice(CODAS)
                for _ in range(syllables)
            )
        )
    ordered = sorted(words)  # a set's order changes from run to run
    rng.shuffle(ordered)  # frequency rank independent of spelling
    return ordered


def sentences(rng: random.Random, words: list[str], count: int) -> str:
    """``count`` words as sentences and paragraphs; Zipf frequencies over ``words``."""
    cumulative = list(accumulate(1.0 / (rank + 1) for rank in range(len(words))))
    drawn = rng.choices(words, cum_weights=cumulative, k=count)
    parts: list[str] = []
    i = 0
    while i < count:
        length = rng.randint(4, 14)
        sentence = drawn[i : i + length]
        i += length
        text = " ".join(sentence)
        parts.append(text[:1].upper() + text[1:] + ".")
        parts.append("\n\n" if rng.random() < 0.15 else " ")
    return "".join(parts)


def write_corpus(path: Path, megabytes: float, seed: int = 0) -> int:
    """Write at least ``megabytes`` MB (10**6 bytes) of corpus to ``path``; its size."""
    rng = random.Random(seed)
    words = lexicon(rng)
    target = int(megabytes * 1_000_000)
    written = 0
    with path.open("w", encoding="utf-8") as out:
        while written < target:
            chunk = sentences(rng, words, CHUNK_WORDS)
            out.write(chunk)
            written += len(chunk.encode("utf-8"))
    return written
