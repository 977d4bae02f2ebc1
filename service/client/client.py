"""A small synchronous Python client for seqserve; every method returns the response proto."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from types import TracebackType

from grpc_health.v1 import health_pb2, health_pb2_grpc
from seqserve.v1 import (
    classification_pb2,
    classification_pb2_grpc,
    document_pb2,
    document_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    ner_pb2,
    ner_pb2_grpc,
    recommendation_pb2,
    recommendation_pb2_grpc,
    sentiment_pb2,
    sentiment_pb2_grpc,
    translation_pb2,
    translation_pb2_grpc,
)

from service.client.channel import Connection, open_channel


class SeqserveClient:
    """Calls raise grpc.RpcError (with .code() and .details()) when the server refuses them."""

    def __init__(self, target: str, timeout: float = 10.0, connection: Connection | None = None) -> None:
        """`connection`: TLS / mutual TLS / bearer token (service/client/channel.py); default plaintext."""
        self.target = target
        self.timeout = timeout
        self._channel = open_channel(target, connection)
        self._sentiment = sentiment_pb2_grpc.SentimentStub(self._channel)
        self._classification = classification_pb2_grpc.ClassificationStub(self._channel)
        self._models = models_pb2_grpc.ModelsStub(self._channel)
        self._translation = translation_pb2_grpc.TranslationStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._ner = ner_pb2_grpc.NerStub(self._channel)
        self._recommendation = recommendation_pb2_grpc.RecommendationStub(self._channel)
        self._document = document_pb2_grpc.DocumentStub(self._channel)

    def sentiment(
        self, texts: Sequence[str], model: str = "", omit_tokens: bool = False
    ) -> sentiment_pb2.AnalyzeSentimentResponse:
        """Labels, probabilities and token attention; omit_tokens: without the token attention (cheaper)."""
        request = sentiment_pb2.AnalyzeSentimentRequest(texts=list(texts), model=model, omit_tokens=omit_tokens)
        return self._sentiment.Analyze(request, timeout=self.timeout)

    def classify(
        self, texts: Sequence[str], model: str = "", omit_tokens: bool = False
    ) -> classification_pb2.ClassifyResponse:
        """Labels, probabilities and token attention from a classification (or sentiment) model;
        omit_tokens: without the token attention."""
        request = classification_pb2.ClassifyRequest(texts=list(texts), model=model, omit_tokens=omit_tokens)
        return self._classification.Classify(request, timeout=self.timeout)

    def document(
        self, texts: Sequence[str], model: str = "", omit_tokens: bool = False
    ) -> document_pb2.AnalyzeDocumentResponse:
        """Each document's label and probabilities, its sentences (span, weight, label) and word weights
        (not with omit_tokens)."""
        request = document_pb2.AnalyzeDocumentRequest(texts=list(texts), model=model, omit_tokens=omit_tokens)
        return self._document.Analyze(request, timeout=self.timeout)

    def translate(
        self, texts: Sequence[str], model: str = "", beam_size: int = 0, n_best: int = 0,
        max_output_tokens: int = 0, length_penalty: float | None = None, alignment: bool = False,
    ) -> translation_pb2.TranslateResponse:
        """Zero / None options mean the model's defaults (its manifest's decoding section)."""
        options = translation_pb2.DecodingOptions(beam_size=beam_size, n_best=n_best,
                                                  max_output_tokens=max_output_tokens, return_alignment=alignment)
        if length_penalty is not None:
            options.length_penalty = length_penalty
        request = translation_pb2.TranslateRequest(texts=list(texts), model=model, options=options)
        return self._translation.Translate(request, timeout=self.timeout)

    def translate_stream(
        self, text: str, model: str = "", max_output_tokens: int = 0
    ) -> Iterator[translation_pb2.TranslatePiece]:
        """Greedy pieces as the server produces them (the timeout covers the whole stream)."""
        request = translation_pb2.TranslateStreamRequest(text=text, model=model, max_output_tokens=max_output_tokens)
        return iter(self._translation.TranslateStream(request, timeout=self.timeout))

    def ner(
        self, texts: Sequence[str], model: str = "", include_tokens: bool = False
    ) -> ner_pb2.RecognizeEntitiesResponse:
        request = ner_pb2.RecognizeEntitiesRequest(texts=list(texts), model=model, include_tokens=include_tokens)
        return self._ner.Recognize(request, timeout=self.timeout)

    def recommend(
        self, history: Sequence[int | str | recommendation_pb2.HistoryItem], k: int | None = None,
        exclude_seen: bool = False, model: str = "", omit_attention: bool = False
    ) -> recommendation_pb2.RecommendResponse:
        """History oldest first: ints are catalogue ids, strings titles ("Toy Story (1995)"), a HistoryItem as
        given (e.g. HistoryItem(key="sku-0042")); k None = 10; omit_attention: without the history weights."""
        items = [item if isinstance(item, recommendation_pb2.HistoryItem)
                 else recommendation_pb2.HistoryItem(id=item) if isinstance(item, int)
                 else recommendation_pb2.HistoryItem(title=item) for item in history]
        request = recommendation_pb2.RecommendRequest(history=items, k=k, exclude_seen=exclude_seen, model=model,
                                                      omit_attention=omit_attention)
        return self._recommendation.Recommend(request, timeout=self.timeout)

    def list_models(self, task: str = "") -> models_pb2.ListModelsResponse:
        return self._models.ListModels(models_pb2.ListModelsRequest(task=task), timeout=self.timeout)

    def get_model(self, name: str) -> models_pb2.ModelInfo:
        return self._models.GetModel(models_pb2.GetModelRequest(name=name), timeout=self.timeout)

    def health(self, service: str = "") -> health_pb2.HealthCheckResponse:
        """The server's health ("" = the whole server) or one service's, e.g. "seqserve.v1.Sentiment"."""
        return self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> SeqserveClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
