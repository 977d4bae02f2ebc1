"""A small synchronous Python client for seqserve; every method returns the response proto."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from seqserve.v1 import models_pb2, models_pb2_grpc, sentiment_pb2, sentiment_pb2_grpc


class SeqserveClient:
    """Calls raise grpc.RpcError (with .code() and .details()) when the server refuses them."""

    def __init__(self, target: str, timeout: float = 10.0) -> None:
        self.target = target
        self.timeout = timeout
        self._channel = grpc.insecure_channel(target)
        self._sentiment = sentiment_pb2_grpc.SentimentStub(self._channel)
        self._models = models_pb2_grpc.ModelsStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def sentiment(self, texts: Sequence[str], model: str = "") -> sentiment_pb2.AnalyzeSentimentResponse:
        request = sentiment_pb2.AnalyzeSentimentRequest(texts=list(texts), model=model)
        return self._sentiment.Analyze(request, timeout=self.timeout)

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
