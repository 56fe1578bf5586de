"""Training data: aligned pairs, next-character windows over text, padding and batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.ml.data import IGNORE_INDEX, TextWindows, batches, pairs_dataset, split, text_dataset
from app.ml.errors import DataError, UnknownCharactersError
from app.ml.vocab import Vocab


def test_pairs_are_encoded_and_right_padded() -> None:
    dataset = pairs_dataset([("hello", "ohlol"), ("he", "oh")])

    assert dataset.task == "pairs"
    assert dataset.examples.texts == ["hello", "he"]
    assert dataset.examples.lengths.tolist() == [5, 2]
    # targets past a row's end hold IGNORE_INDEX, so they never count
    h, l, o = 0, 1, 2  # noqa: E741 -- the output vocabulary is ['h', 'l', 'o']
    assert dataset.examples.targets.tolist() == [
        [o, h, l, o, l],
        [o, h, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX],
    ]


def test_pairs_of_different_lengths_are_refused_naming_the_pair() -> None:
    with pytest.raises(DataError, match=r"input has 5 characters but target has 4") as caught:
        pairs_dataset([("he", "oh"), ("hello", "ohlo")])

    assert caught.value.field == "pairs[1]"
    assert str(caught.value).startswith("pairs[1]: ")


def test_no_pairs_are_refused() -> None:
    with pytest.raises(DataError, match="no training pairs given") as caught:
        pairs_dataset([])

    assert caught.value.field == "pairs"


def test_an_empty_pair_is_refused() -> None:
    with pytest.raises(DataError, match=r"pairs\[0\].input: is empty"):
        pairs_dataset([("", "")])


def test_pairs_outside_a_given_vocabulary_name_pair_and_position(tutorial_vocab: Vocab) -> None:
    with pytest.raises(UnknownCharactersError) as caught:
        pairs_dataset([("hello", "ohlol"), ("hex", "ohl")], vocab=tutorial_vocab)

    assert "'x' at position 2 of pairs[1].input" in str(caught.value)


def test_text_becomes_windows_with_targets_shifted_by_one() -> None:
    dataset = text_dataset("hello world", seq_len=4)

    assert dataset.task == "text"
    assert dataset.vocab.is_shared
    windows = [
        (text, dataset.vocab.decode_output(row[:n].tolist()))
        for text, row, n in zip(
            dataset.examples.texts,
            dataset.examples.targets,
            dataset.examples.lengths.tolist(),
            strict=True,
        )
    ]
    assert windows == [("hell", "ello"), ("o wo", " wor"), ("rl", "ld")]


def test_text_too_short_to_predict_anything_is_refused() -> None:
    with pytest.raises(DataError, match="needs at least 2 characters") as caught:
        text_dataset("a", seq_len=4)

    assert caught.value.field == "text"


def test_text_needs_a_shared_vocabulary() -> None:
    with pytest.raises(DataError, match="input and output must match"):
        text_dataset("abab", seq_len=2, vocab=Vocab(input=["a", "b"], output=["a"]))


def test_unknown_characters_in_text_are_located_in_the_whole_text() -> None:
    vocab = Vocab.from_text("ab")

    with pytest.raises(UnknownCharactersError, match=r"'c' at position 5 of text;"):
        text_dataset("ababacab", seq_len=2, vocab=vocab)


def test_split_holds_out_a_fraction_rounded_down_and_is_seeded() -> None:
    examples = pairs_dataset([(c, c) for c in "abcdefghi"]).examples

    train, held_out = split(examples, 0.25, seed=3)
    _, held_out_again = split(examples, 0.25, seed=3)

    assert held_out is not None
    assert held_out_again is not None
    assert (len(train), len(held_out)) == (7, 2)
    assert sorted(train.texts + held_out.texts) == list("abcdefghi")
    assert held_out_again.texts == held_out.texts


def test_split_with_nothing_to_hold_out_keeps_everything() -> None:
    examples = pairs_dataset([("ab", "ba"), ("ba", "ab")]).examples

    assert split(examples, 0.4, seed=0) == (examples, None)


def test_each_batch_is_trimmed_to_its_longest_row() -> None:
    examples = pairs_dataset([("a", "b"), ("ab", "ba"), ("abcd", "dcba")]).examples

    widths = [batch.inputs.shape for batch in batches(examples, torch.arange(3), batch_size=2)]

    assert widths == [torch.Size([2, 2]), torch.Size([1, 4])]


def windows_over(text: str, seq_len: int) -> TextWindows:
    """The windows of ``text`` read from an id array, as a stored dataset gives them."""
    vocab = Vocab.from_text(text)
    ids = np.array([vocab.input.index(c) for c in text], dtype="<u2")
    return TextWindows(ids, seq_len, vocab)


def test_text_windows_give_the_same_batches_as_inline_text() -> None:
    text = "the quick brown fox jumps over the lazy dog" * 3
    inline = text_dataset(text, seq_len=10).examples
    windows = windows_over(text, seq_len=10)
    assert (len(windows), windows.characters, windows.width) == (
        len(inline),
        inline.characters,
        inline.width,
    )

    inline_train, inline_val = split(inline, 0.2, seed=3)
    windows_train, windows_val = split(windows, 0.2, seed=3)
    assert inline_val is not None
    assert windows_val is not None
    for a, b in [(inline_train, windows_train), (inline_val, windows_val)]:
        order = torch.randperm(len(a), generator=torch.Generator().manual_seed(1))
        for x, y in zip(batches(a, order, 4), batches(b, order, 4), strict=True):
            assert torch.equal(x.inputs, y.inputs)
            assert torch.equal(x.targets, y.targets)
            assert torch.equal(x.lengths, y.lengths)
        assert a.sample(0)[0] == b.sample(0)[0]
        assert torch.equal(a.sample(0)[1], b.sample(0)[1])


def test_text_windows_map_their_ids_to_a_larger_vocabulary() -> None:
    windows = windows_over("abcabc", seq_len=3)
    vocab = Vocab(input=["x", "a", "b", "c"], output=["x", "a", "b", "c"])
    mapped = TextWindows(windows.ids, 3, vocab, table=np.array([1, 2, 3]))

    batch = mapped.batch(torch.tensor([0, 1]))

    assert batch.inputs.tolist() == [[1, 2, 3], [1, 2, 0]]  # the last window: 2 ids, padded
    assert batch.targets.tolist() == [[2, 3, 1], [2, 3, IGNORE_INDEX]]
    assert mapped.sample(1)[0] == "ab"
