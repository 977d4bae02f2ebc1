"""One SentimentPipeline per loaded sentiment model, built once at start-up.

A model whose pipeline cannot be built (its manifest lacks labels or special tokens) is refused the
same way the repository refuses a bad checksum: one log line, a recorded failure, and it is dropped
from the repository so ListModels and health never advertise a model that cannot answer.
"""

from __future__ import annotations

import logging

from service.pipelines.sentiment import TASK, SentimentPipeline
from service.repository.repository import LoadFailure, ModelRepository

log = logging.getLogger(__name__)


def build_sentiment_pipelines(repository: ModelRepository) -> dict[str, SentimentPipeline]:
    pipelines: dict[str, SentimentPipeline] = {}
    for model in repository.by_task(TASK):
        try:
            pipelines[model.name] = SentimentPipeline(model)
        except (KeyError, TypeError, ValueError) as exc:
            reason = f"cannot build its sentiment pipeline ({type(exc).__name__}: {exc})"
            log.error("refusing model %s version %s: %s", model.name, model.version, reason)
            repository.failures.append(LoadFailure(model.name, model.version, reason))
            del repository.models[model.name]
    return pipelines
