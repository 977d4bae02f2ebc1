"""Which pipeline serves which task: the one place a new task (translation, NER, ...) is registered.

Servers, the model manager and the batcher only see the `Pipeline` protocol, so adding a task means
adding its pipeline here and its servicer in service/grpc/server.py (add_task_servicers), nothing else.
"""

from __future__ import annotations

from collections.abc import Callable

from service.model.loaded_model import LoadedModel
from service.model.pipeline import AnyPipeline
from service.pipelines.classification import TASK as CLASSIFICATION_TASK
from service.pipelines.classification import ClassificationPipeline
from service.pipelines.document import TASK as DOCUMENT_TASK
from service.pipelines.document import DocumentPipeline
from service.pipelines.ner import TASK as NER_TASK
from service.pipelines.ner import NerPipeline
from service.pipelines.recommendation import TASK as RECOMMENDATION_TASK
from service.pipelines.recommendation import RecommendationPipeline
from service.pipelines.sentiment import TASK as SENTIMENT_TASK
from service.pipelines.sentiment import SentimentPipeline
from service.pipelines.translation import TASK as TRANSLATION_TASK
from service.pipelines.translation import TranslationPipeline

PipelineFactory = Callable[[LoadedModel], AnyPipeline]

_FACTORIES: dict[str, PipelineFactory] = {SENTIMENT_TASK: SentimentPipeline, TRANSLATION_TASK: TranslationPipeline,
                                           RECOMMENDATION_TASK: RecommendationPipeline, NER_TASK: NerPipeline,
                                           CLASSIFICATION_TASK: ClassificationPipeline, DOCUMENT_TASK: DocumentPipeline}


def build_pipeline(model: LoadedModel) -> AnyPipeline | None:
    """The task's pipeline, or None for a task with none (it is still served raw over the V2 protocol)."""
    factory = _FACTORIES.get(model.task)
    return factory(model) if factory is not None else None
