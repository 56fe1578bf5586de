"""Inference: per-position predictions for a batch, labels for a classifier's batch, and
sampling for text models.

A ``Predictor`` owns one model on one device, in eval mode, and is safe to reuse
across calls; every call runs under ``torch.inference_mode``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from app.ml.checkpoint import Checkpoint
from app.ml.data import Task, pad
from app.ml.errors import CheckpointError, ConfigurationError, DataError
from app.ml.model import ModelConfig, build_model
from app.ml.vocab import Vocab


@dataclass(frozen=True)
class TopK:
    """The k likeliest output characters at each position, likeliest first.

    Two lists of lists rather than an object per value: a large answer holds a quarter
    of a million values, and as many small objects cost the collector whole passes.
    """

    characters: list[list[str]]  # (T, k)
    probabilities: list[list[float]]  # (T, k)

    def first(self, k: int) -> TopK:
        return TopK([c[:k] for c in self.characters], [p[:k] for p in self.probabilities])


@dataclass(frozen=True)
class LabelScores:
    """A classifier's answer for one sequence: its label, that label's probability, and
    the k likeliest labels with theirs, likeliest first (empty when k is 0)."""

    label: str
    probability: float
    top_labels: list[str]
    top_probabilities: list[float]

    def first(self, k: int) -> LabelScores:
        return LabelScores(
            self.label, self.probability, self.top_labels[:k], self.top_probabilities[:k]
        )


@dataclass(frozen=True)
class Prediction:
    output: str  # the output characters; a classifier's: the label
    probabilities: list[float] | None = None  # of the chosen character, per position
    top_k: TopK | None = None
    label: LabelScores | None = None  # a classifier's, always


def reported_values(inputs: Sequence[str], top_k: int, probabilities: bool) -> int:
    """Per-character values a prediction reports beyond its outputs: what its size grows with."""
    return sum(map(len, inputs)) * (top_k + int(probabilities))


class Predictor:
    def __init__(
        self,
        model: nn.Module,
        config: ModelConfig,
        vocab: Vocab,
        device: torch.device,
        task: Task = "pairs",
    ) -> None:
        self.model = model.to(device).eval()
        self.config = config
        self.vocab = vocab
        self.device = device
        self.task = task

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, device: torch.device) -> Predictor:
        with torch.random.fork_rng(devices=[]):  # initialisation must not move anyone's RNG
            model = build_model(checkpoint.config)
        model.load_state_dict(checkpoint.weights, assign=True)
        return cls(model, checkpoint.config, checkpoint.vocab, device, checkpoint.task)

    @torch.inference_mode()
    def logits(self, ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded ids -> (logits (B, T, V) on the device, lengths (B,) on the CPU)."""
        lengths = [len(row) for row in ids]
        return self._forward(ids, lengths), torch.tensor(lengths, dtype=torch.long)

    def _forward(self, ids: Sequence[Sequence[int]], lengths: list[int]) -> torch.Tensor:
        inputs = pad(ids, 0).to(self.device)
        ragged = min(lengths) != max(lengths)  # else the model need not look at lengths
        logits, _ = self.model(inputs, torch.tensor(lengths) if ragged else None)
        return logits  # type: ignore[no-any-return]

    def predict(
        self, texts: Sequence[str], *, top_k: int = 0, probabilities: bool = False
    ) -> list[Prediction]:
        """The most likely output character at every position of every input (for a
        classifier: the most likely label of every input).

        Raises ``UnknownCharactersError`` naming every character outside the vocabulary.
        """
        return self.predict_ids(self.check_inputs(texts), top_k=top_k, probabilities=probabilities)

    def check_inputs(self, texts: Sequence[str], field: str = "inputs") -> list[list[int]]:
        """``texts`` encoded, or the error that names what this model cannot read:
        unknown characters, and for a classifier an empty input (no sequence to label)."""
        if self.task == "classify":
            for i, text in enumerate(texts):
                if not text:
                    raise DataError(
                        f"{field}[{i}]",
                        "is empty; a classifier labels a sequence of at least one character",
                    )
        return self.vocab.encode_inputs(texts, field=f"{field}[{{i}}]")

    def predict_ids(
        self, ids: Sequence[Sequence[int]], *, top_k: int = 0, probabilities: bool = False
    ) -> list[Prediction]:
        """``predict`` for inputs already encoded with ``vocab.encode_inputs``."""
        if self.task == "classify":
            return self.classify_ids(ids, top_k=top_k)
        nonempty = [i for i, row in enumerate(ids) if row]
        results = [
            Prediction("", [] if probabilities else None, TopK([], []) if top_k else None)
            for _ in ids
        ]
        if not nonempty:
            return results
        rows = [ids[i] for i in nonempty]
        lengths = [len(row) for row in rows]
        # plain lists out of the tensors at once: a per-row tensor slice costs microseconds
        with torch.inference_mode():
            logits = self._forward(rows, lengths)
            probs = logits.softmax(-1) if (probabilities or top_k) else None
            best = logits.argmax(-1).tolist()  # (B, T)
            top = (
                probs.topk(min(top_k, probs.size(-1)), dim=-1)
                if probs is not None and top_k
                else None
            )
            if probs is not None and not bool(probs.isfinite().all()):
                raise CheckpointError(
                    "the model's outputs are not finite numbers: its weights hold NaN or "
                    "infinity; train it again or import a sound checkpoint"
                )
            chosen = probs.max(-1).values.tolist() if probs is not None and probabilities else None
        for row, (i, n) in enumerate(zip(nonempty, lengths, strict=True)):
            results[i] = Prediction(
                output=self.vocab.decode_output(best[row][:n]),
                probabilities=chosen[row][:n] if chosen is not None else None,
                top_k=self._top_k(top, row, n) if top is not None else None,
            )
        return results

    def classify_ids(self, ids: Sequence[Sequence[int]], *, top_k: int = 0) -> list[Prediction]:
        """Each (non-empty) input's label, its probability and the ``top_k`` likeliest."""
        if not ids:
            return []
        labels = self.vocab.labels or []
        with torch.inference_mode():
            probs = self._forward(ids, [len(row) for row in ids]).softmax(-1)  # (B, V_labels)
            if not bool(probs.isfinite().all()):
                raise CheckpointError(
                    "the model's outputs are not finite numbers: its weights hold NaN or "
                    "infinity; train it again or import a sound checkpoint"
                )
            top = probs.topk(max(min(top_k, probs.size(-1)), 1), dim=-1)
            indices, values = top.indices.tolist(), top.values.tolist()
        results = []
        for row_indices, row_values in zip(indices, values, strict=True):
            scores = LabelScores(
                label=labels[row_indices[0]],
                probability=row_values[0],
                top_labels=[labels[j] for j in row_indices[:top_k]],
                top_probabilities=row_values[:top_k],
            )
            results.append(Prediction(output=scores.label, label=scores))
        return results

    def _top_k(self, top: torch.return_types.topk, row: int, length: int) -> TopK:
        output = self.vocab.output_chars
        indices = top.indices[row, :length].tolist()
        characters = [[output[j] for j in position] for position in indices]
        return TopK(characters, top.values[row, :length].tolist())

    @torch.inference_mode()
    def generate(
        self, prompt: str, length: int, *, temperature: float = 1.0, seed: int | None = None
    ) -> str:
        """Continue ``prompt`` by ``length`` characters (temperature 0: always the likeliest)."""
        if self.task == "classify":
            raise ConfigurationError(
                "this model is a classifier, which labels whole sequences; generation "
                "needs a model trained on text"
            )
        if self.task != "text" or not self.vocab.is_shared:
            raise ConfigurationError(
                "this model was trained on aligned pairs, which map inputs to outputs; "
                "generation needs a model trained on text"
            )
        if not prompt:
            raise ConfigurationError("prompt must hold at least one character")
        if temperature < 0:
            raise ConfigurationError("temperature must be >= 0")
        ids = self.vocab.encode_inputs([prompt], field="prompt")
        generator = torch.Generator(device=self.device)
        if seed is None:
            generator.seed()  # from the OS; torch.seed() would reseed the global generators
        else:
            generator.manual_seed(seed)
        logits, state = self.model(torch.tensor(ids, device=self.device))  # (1, T, V)
        out: list[int] = []
        for _ in range(length):
            last = logits[0, -1]  # (V,)
            if temperature == 0:
                nxt = int(last.argmax())
            else:
                # shifted, and in float64: a tiny temperature sends the others to -inf (the
                # likeliest stays at 0), never to nan; float32 would round it to 0
                probs = ((last - last.max()).double() / temperature).softmax(-1)
                nxt = int(torch.multinomial(probs, 1, generator=generator))
            out.append(nxt)
            logits, state = self.model(torch.tensor([[nxt]], device=self.device), state=state)
        return prompt + self.vocab.decode_output(out)
