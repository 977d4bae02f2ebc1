"""Endpoints as small plug-ins: a name, the requests to send, a response check and the in-process
onnxruntime equivalent of one call (the baseline the served call is compared with).

Adding an endpoint (translation, NER, ...) means one factory here and its name in FACTORIES; every
scenario that takes an endpoint (overhead, concurrency sweeps) then covers it.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from seqserve.v1 import sentiment_pb2

from service.registry.loader import prepare_version

if TYPE_CHECKING:
    from seqserve.oip import grpc_service_pb2 as oip

SENTIMENT_METHOD = "/seqserve.v1.Sentiment/Analyze"
V2_INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"


@dataclass(frozen=True)
class Endpoint:
    name: str                          # as the report shows it
    method: str                        # gRPC method path
    requests: Sequence[bytes]          # one serialised request per input (batch 1)
    raw: Callable[[int], object]       # runs input i in-process on onnxruntime: the baseline
    check: Callable[[bytes], None]     # raises AssertionError if a response is not a real answer


def _load_pipeline(version_dir: pathlib.Path) -> Any:
    """The server's own pipeline for that version, with 1 onnxruntime thread as each served session has."""
    pipeline = prepare_version(version_dir, intra_op_threads=1).pipeline
    if pipeline is None:
        raise ValueError(f"{version_dir} has no task pipeline")
    return pipeline


def sentiment_task(version_dir: pathlib.Path, texts: Sequence[str], model: str = "",
                   omit_tokens: bool = False) -> Endpoint:
    """seqserve.v1.Sentiment/Analyze, one text per call; baseline: the same pipeline in-process
    (tokenize -> onnxruntime -> labels and attention), i.e. what a caller without a server would run.
    `omit_tokens`: the calls ask for label and probabilities only (what a caller counting calls/s wants)."""
    pipeline = _load_pipeline(version_dir)
    requests = [sentiment_pb2.AnalyzeSentimentRequest(texts=[t], model=model, omit_tokens=omit_tokens)
                .SerializeToString() for t in texts]

    def check(raw: bytes) -> None:
        response = sentiment_pb2.AnalyzeSentimentResponse.FromString(raw)
        assert len(response.results) == 1 and response.results[0].label, response
        assert bool(response.results[0].tokens) != omit_tokens, response

    return Endpoint(
        name=f"Sentiment.Analyze ({model or 'default'}{', omit_tokens' if omit_tokens else ''})",
        method=SENTIMENT_METHOD, requests=requests,
        raw=lambda i: pipeline([texts[i % len(texts)]]), check=check,
    )


def sentiment_tensors(version_dir: pathlib.Path, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """input_ids and attention_mask of every text, padded to ONE common width.

    One width because MLServer's adaptive batching concatenates requests' tensors as they are, so
    requests of different widths could not be batched there; every V2 server gets the same tensors.
    """
    pipeline = _load_pipeline(version_dir)
    encodings = pipeline.model.tokenizer.encode_batch(list(texts), add_special_tokens=False)
    width = max(len(e.ids) for e in encodings)
    ids = np.full((len(texts), width), pipeline.pad_id, dtype=np.int64)
    mask = np.zeros((len(texts), width), dtype=np.int64)
    for row, encoding in enumerate(encodings):
        ids[row, : len(encoding.ids)] = encoding.ids
        mask[row, : len(encoding.ids)] = 1
    return ids, mask


def _oip() -> Any:
    """Our V2 messages, imported when a V2 endpoint is built: a process that also imports tritonclient's copy
    of the same proto (the test suite) fails with "duplicate symbol" if both load."""
    from seqserve.oip import grpc_service_pb2

    return grpc_service_pb2


def v2_infer_request(model: str, ids: np.ndarray, mask: np.ndarray) -> oip.ModelInferRequest:
    request = _oip().ModelInferRequest(model_name=model)
    for name, array in (("input_ids", ids), ("attention_mask", mask)):
        request.inputs.add(name=name, datatype="INT64", shape=list(array.shape))
        request.raw_input_contents.append(np.ascontiguousarray(array, dtype="<i8").tobytes())
    request.outputs.add(name="probabilities")
    return request


def sentiment_v2(version_dir: pathlib.Path, texts: Sequence[str], model: str, label: str = "V2 ModelInfer") -> Endpoint:
    """KServe V2 ModelInfer with the tokenized tensors, one row per call, asking for the probabilities;
    baseline: onnxruntime's session.run on the very same tensors."""
    ids, mask = sentiment_tensors(version_dir, texts)
    requests = [v2_infer_request(model, ids[i : i + 1], mask[i : i + 1]).SerializeToString() for i in range(len(texts))]
    session = _load_pipeline(version_dir).model.session

    def raw(i: int) -> object:
        row = i % len(texts)
        return session.run(["probabilities"], {"input_ids": ids[row : row + 1], "attention_mask": mask[row : row + 1]})

    def check(raw_response: bytes) -> None:
        response = _oip().ModelInferResponse.FromString(raw_response)
        assert [o.name for o in response.outputs] == ["probabilities"], response
        assert list(response.outputs[0].shape) == [1, 3], response

    return Endpoint(name=f"{label} ({model})", method=V2_INFER_METHOD, requests=requests, raw=raw, check=check)


def _task_pipeline(exported: pathlib.Path, task: str) -> Any | None:
    """The pipeline of the newest version of the task's default model (the manifest's
    `default_for_task`; else the first model of the task by name), or None if the task has no model."""
    candidates = []
    for model_root in sorted(p for p in exported.iterdir() if p.is_dir()):
        versions = sorted((v for v in model_root.iterdir() if v.name.isdigit()), key=lambda v: int(v.name))
        if not versions:
            continue
        manifest = json.loads((versions[-1] / "manifest.json").read_text("utf-8"))
        if manifest.get("task") == task:
            candidates.append((not manifest.get("default_for_task"), versions[-1]))
    return _load_pipeline(min(candidates, key=lambda c: c[0])[1]) if candidates else None


def translation_endpoint(exported: pathlib.Path, texts: Sequence[str]) -> Endpoint | None:
    """seqserve.v1.Translation/Translate, greedy, one text per call; baseline: its pipeline in-process.

    None until the translation API and an exported translation model exist. Decoding comparisons
    (cache vs eager vs CTranslate2, beam sizes) belong to the translation work (issue 7, section 4).
    """
    try:
        from seqserve.v1 import translation_pb2

        from service.grpc.translation_validation import decode_options
        from service.pipelines.translation import TranslationRequest
    except ImportError:
        return None
    pipeline = _task_pipeline(exported, "translation")
    if pipeline is None:
        return None
    model = pipeline.model.name
    options = translation_pb2.DecodingOptions(beam_size=1)
    requests = [translation_pb2.TranslateRequest(texts=[t], model=model, options=options).SerializeToString()
                for t in texts]
    # The very options the server decodes this request with (unset fields take the manifest's defaults).
    served_options = decode_options(options, pipeline)

    def check(raw: bytes) -> None:
        response = translation_pb2.TranslateResponse.FromString(raw)
        assert len(response.results) == 1 and response.results[0].hypotheses, response

    return Endpoint(name=f"Translation.Translate greedy ({model})", method="/seqserve.v1.Translation/Translate",
                    requests=requests, check=check,
                    raw=lambda i: pipeline([TranslationRequest(texts[i % len(texts)], served_options)]))


def ner_endpoint(exported: pathlib.Path, texts: Sequence[str]) -> Endpoint | None:
    """seqserve.v1.Ner/Recognize, one text per call, the default NER model; baseline: its pipeline in-process.

    None until the NER API and an exported NER model exist.
    """
    try:
        from seqserve.v1 import ner_pb2
    except ImportError:
        return None
    pipeline = _task_pipeline(exported, "ner")
    if pipeline is None:
        return None
    model = pipeline.model.name
    requests = [ner_pb2.RecognizeEntitiesRequest(texts=[t], model=model).SerializeToString() for t in texts]

    def check(raw: bytes) -> None:
        response = ner_pb2.RecognizeEntitiesResponse.FromString(raw)
        assert len(response.results) == 1 and response.model.name == model, response

    return Endpoint(name=f"Ner.Recognize ({model})", method="/seqserve.v1.Ner/Recognize", requests=requests,
                    check=check, raw=lambda i: pipeline([texts[i % len(texts)]]))


def recommendation_endpoint(exported: pathlib.Path, texts: Sequence[str]) -> Endpoint | None:
    """seqserve.v1.Recommendation/Recommend, top 10 for one history per call (histories of 5 to 50 items
    drawn from the catalogue, seeded); baseline: its pipeline in-process. `texts` is not used."""
    try:
        from seqserve.v1 import recommendation_pb2

        from service.pipelines.recommendation import RecommendationRequest
    except ImportError:
        return None
    pipeline = _task_pipeline(exported, "recommendation")
    if pipeline is None:
        return None
    model = pipeline.model.name
    rng = np.random.default_rng(0)
    ids = [item_id for item_id, _ in pipeline.catalogue.popular[:500]]
    histories = [[int(i) for i in rng.choice(ids, size=length, replace=False)] for length in (5, 12, 20, 35, 50) * 4]
    requests = [recommendation_pb2.RecommendRequest(
        history=[recommendation_pb2.HistoryItem(id=i) for i in history], k=10, exclude_seen=True, model=model,
    ).SerializeToString() for history in histories]

    def check(raw: bytes) -> None:
        response = recommendation_pb2.RecommendResponse.FromString(raw)
        assert len(response.items) == 10 and not response.fallback, response

    return Endpoint(name=f"Recommendation.Recommend ({model})", method="/seqserve.v1.Recommendation/Recommend",
                    requests=requests, check=check,
                    raw=lambda i: pipeline([RecommendationRequest(tuple(histories[i % len(histories)]), 10, True)]))


FACTORIES: dict[str, Callable[[pathlib.Path, Sequence[str]], Endpoint | None]] = {
    "translation": translation_endpoint,
    "ner": ner_endpoint,
    "recommendation": recommendation_endpoint,
}
