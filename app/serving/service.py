"""Predict and generate: resolve the version, enforce the limits, run the model."""

from __future__ import annotations

from collections.abc import Sequence

from app.errors import LimitExceededError
from app.ml.inference import Prediction, Predictor
from app.serving.cache import ModelCache
from app.settings import Settings
from app.store.registry import Registry
from app.store.tables import VersionRow


class Serving:
    def __init__(self, settings: Settings, registry: Registry, cache: ModelCache) -> None:
        self.settings = settings
        self.registry = registry
        self.cache = cache

    def predictor(self, model_name: str, version: int | None) -> tuple[VersionRow, Predictor]:
        row = self.registry.get_version(model_name, version)
        return row, self.cache.get(model_name, row.directory)

    def check_inputs(self, field: str, texts: Sequence[str]) -> None:
        limit = self.settings.max_predict_inputs
        if len(texts) > limit:
            raise LimitExceededError(
                field, f"{len(texts)} inputs, at most {limit} allowed", "CHARNN_MAX_PREDICT_INPUTS"
            )
        longest = self.settings.max_input_length
        for i, text in enumerate(texts):
            if len(text) > longest:
                raise LimitExceededError(
                    f"{field}[{i}]",
                    f"{len(text)} characters, at most {longest} allowed",
                    "CHARNN_MAX_INPUT_LENGTH",
                )

    def predict(
        self,
        model_name: str,
        version: int | None,
        inputs: Sequence[str],
        *,
        top_k: int = 0,
        probabilities: bool = False,
    ) -> tuple[VersionRow, list[Prediction]]:
        self.check_inputs("inputs", inputs)
        row, predictor = self.predictor(model_name, version)
        return row, predictor.predict(inputs, top_k=top_k, probabilities=probabilities)

    def generate(
        self,
        model_name: str,
        version: int | None,
        prompt: str,
        length: int,
        temperature: float,
        seed: int | None,
    ) -> tuple[VersionRow, str]:
        if len(prompt) > self.settings.max_input_length:
            raise LimitExceededError(
                "prompt",
                f"{len(prompt)} characters, at most {self.settings.max_input_length} allowed",
                "CHARNN_MAX_INPUT_LENGTH",
            )
        if length > self.settings.max_generate_length:
            raise LimitExceededError(
                "length",
                f"{length} characters asked for, at most {self.settings.max_generate_length}",
                "CHARNN_MAX_GENERATE_LENGTH",
            )
        row, predictor = self.predictor(model_name, version)
        return row, predictor.generate(prompt, length, temperature=temperature, seed=seed)
