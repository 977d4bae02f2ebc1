"""seqserve.v1.Document: validate, pick the model, check each document against its limits, run the
documents through the model's batcher, answer."""

from __future__ import annotations

import grpc
from seqserve.v1 import document_pb2, document_pb2_grpc, sentiment_pb2

from service.grpc.batched import Served, Submission, serve_batched
from service.grpc.calls import Call, CallRunner
from service.grpc.validation import RequestError, TextLimits, validate_texts
from service.metrics.registry import ServingMetrics
from service.pipelines.classification import TokenWeight
from service.pipelines.document import TASK, DocumentPipeline, DocumentPrediction
from service.registry.manager import ModelManager

SERVICE_NAME = document_pb2.DESCRIPTOR.services_by_name["Document"].full_name
# A document is many sentences: it may be this many times the server's per-text character limit (2,000 by
# default, so 20,000). The longest VADER document has 5,752 characters; 37 of 798 exceed 2,000. The
# model's own limits (sentences per document, tokens per sentence) bound the graph's work beyond that.
DOCUMENT_CHARS_PER_TEXT_CHARS = 10


def document_limits(limits: TextLimits) -> TextLimits:
    return TextLimits(max_texts=limits.max_texts, max_text_chars=limits.max_text_chars * DOCUMENT_CHARS_PER_TEXT_CHARS)


def _probabilities(probabilities: dict[str, float]) -> list[sentiment_pb2.ClassProbability]:
    # The dict is in the model's label order (pipeline contract), so the list keeps it.
    return [sentiment_pb2.ClassProbability(label=label, probability=p) for label, p in probabilities.items()]


def _tokens(tokens: list[TokenWeight]) -> list[sentiment_pb2.TokenAttention]:
    return [sentiment_pb2.TokenAttention(token=t.token, weight=t.weight, start=t.start, end=t.end) for t in tokens]


def to_result(prediction: DocumentPrediction, tokens: bool = True) -> document_pb2.DocumentResult:
    """`tokens`: False when the request set omit_tokens (no word attention inside the sentences)."""
    return document_pb2.DocumentResult(
        label=prediction.label,
        probabilities=_probabilities(prediction.probabilities),
        sentences=[
            document_pb2.SentenceAnalysis(start=s.start, end=s.end, weight=s.weight, label=s.label,
                                          probabilities=_probabilities(s.probabilities),
                                          tokens=_tokens(s.tokens) if tokens else [])
            for s in prediction.sentences
        ],
    )


def check_limits(pipeline: DocumentPipeline, texts: list[str]) -> Submission[str]:
    """INVALID_ARGUMENT naming the document, the field and the limit for the first document over them."""
    for index, text in enumerate(texts):
        problem = pipeline.limit_problem(text)
        if problem is not None:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"texts[{index}].{problem.field}: {problem.count} {problem.unit} exceeds the limit of "
                f"{problem.limit} (max_{'sentences' if problem.unit == 'sentences' else 'tokens'} of model "
                f"{pipeline.model.name})")
    return Submission(texts)


class DocumentServicer(document_pb2_grpc.DocumentServicer):
    def __init__(self, manager: ModelManager, limits: TextLimits, metrics: ServingMetrics) -> None:
        self._manager = manager
        self._limits = document_limits(limits)
        self._calls = CallRunner(SERVICE_NAME, ("Analyze",), metrics)

    async def Analyze(
        self, request: document_pb2.AnalyzeDocumentRequest, context: grpc.aio.ServicerContext
    ) -> document_pb2.AnalyzeDocumentResponse:
        return await self._calls.run("Analyze", context, lambda call: self._analyze(request, call, context))

    async def _analyze(
        self, request: document_pb2.AnalyzeDocumentRequest, call: Call, context: grpc.aio.ServicerContext
    ) -> document_pb2.AnalyzeDocumentResponse:
        texts = list(request.texts)
        validate_texts(texts, self._limits)  # before the model: a bad call is refused whatever it names
        served: Served[DocumentPipeline, DocumentPrediction] = await serve_batched(
            self._manager, TASK, request.model, DocumentPipeline, lambda pipeline: check_limits(pipeline, texts),
            call, context)
        tokens = not request.omit_tokens
        return document_pb2.AnalyzeDocumentResponse(results=[to_result(p, tokens) for p in served.outputs],
                                                    model=served.model_ref)
