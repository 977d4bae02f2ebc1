"""Documents: split into sentences -> tokenize each -> one hierarchical graph -> the document's label and
probabilities, each sentence's span, weight, label and probabilities, and the word weights inside it.

Sentence rule (docs/han.md): a sentence ends at whitespace that follows '.', '!' or '?' (directly, or
after one closing quote or bracket), and at every line break; sentences are the non-blank spans between,
without their surrounding whitespace. The model was trained on VADER's own sentence units and
evaluated on their texts joined with one space, split back by this rule.

The graph (training/export/han.py) takes input_ids and attention_mask [documents, sentences, words] and
gives document_probabilities, sentence_weights, sentence_probabilities and word_weights. Offsets are
code points into the text as sent. The server and the evaluation both call this class, so published
quality is served quality.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.model.loaded_model import LoadedModel
from service.model.pipeline import Pipeline
from service.model.timing import StageTimings
from service.pipelines.classification import TokenWeight

TASK = "document"
OUTPUTS = ["document_probabilities", "sentence_weights", "sentence_probabilities", "word_weights"]
_SENTENCE_END = re.compile(r"(?<=[.!?])[^\S\n]+|(?<=[.!?][\"'\u201d\u2019)\]])[^\S\n]+|\s*\n\s*")


@dataclass(frozen=True)
class SentencePrediction:
    start: int  # code-point offsets [start, end) of the sentence in the document as sent
    end: int
    weight: float  # the sentence attention; a document's weights sum to 1
    label: str
    probabilities: dict[str, float]
    tokens: list[TokenWeight]  # word attention inside the sentence, offsets into the document


@dataclass(frozen=True)
class DocumentPrediction:
    label: str
    probabilities: dict[str, float]
    sentences: list[SentencePrediction]


@dataclass(frozen=True)
class LimitProblem:
    """Why a document is over the model's limits, for the servicer to refuse it by name."""

    field: str  # "sentences" or "sentences[i]"
    count: int
    limit: int
    unit: str  # "sentences" or "tokens"


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Code-point spans of the sentences of `text` by the rule above (none for a blank text)."""
    spans = []
    start = 0
    for match in [*_SENTENCE_END.finditer(text), None]:
        end = match.start() if match is not None else len(text)
        piece = text[start:end]
        stripped = piece.strip()
        if stripped:
            left = start + (len(piece) - len(piece.lstrip()))
            spans.append((left, left + len(stripped)))
        if match is not None:
            start = match.end()
    return spans


@dataclass(frozen=True)
class _Sentence:
    start: int
    end: int
    ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]  # into the document


class DocumentPipeline(Pipeline[str, DocumentPrediction]):
    def __init__(self, model: LoadedModel) -> None:
        if model.task != TASK or model.tokenizer is None:
            raise ValueError(f"model {model.name} is not a {TASK} model with a tokenizer")
        special = model.manifest.spec.special_tokens
        if special is None:
            raise ValueError(f"model {model.name} has no special_tokens section")
        self.model = model
        self.tokenizer = model.tokenizer
        self.labels = model.manifest.labels
        limits = model.manifest.spec.limits
        self.max_sentences = limits.max_sentences or 96
        self.max_sentence_tokens = limits.max_tokens or 256
        self.pad_id, self.unk_id = special.pad_id, special.unk_id
        self.unk_token = special.unk if special.unk is not None else model.tokenizer.id_to_token(special.unk_id) or ""

    def estimate_tokens(self, text: str) -> int:
        """A cheap size guess for length grouping: ~4 characters a subword, no tokenizing."""
        return len(text) // 4 + 1

    def _sentences(self, text: str) -> list[_Sentence]:
        spans = split_sentences(text)
        encodings = self.tokenizer.encode_batch([text[s:e] for s, e in spans], add_special_tokens=False)
        sentences = []
        for (start, end), encoding in zip(spans, encodings, strict=True):
            ids, tokens = list(encoding.ids), list(encoding.tokens)
            offsets = [(start + s, start + e) for s, e in encoding.offsets]
            if not ids:  # a sentence the normaliser empties still gets one position, as in training
                ids, tokens, offsets = [self.unk_id], [self.unk_token], [(start, start)]
            sentences.append(_Sentence(start, end, ids, tokens, offsets))
        return sentences

    def limit_problem(self, text: str) -> LimitProblem | None:
        """The first way `text` exceeds the model's limits (sentence count, then tokens of a sentence)."""
        return self._problem(self._sentences(text))

    def _problem(self, sentences: list[_Sentence]) -> LimitProblem | None:
        if len(sentences) > self.max_sentences:
            return LimitProblem("sentences", len(sentences), self.max_sentences, "sentences")
        for index, sentence in enumerate(sentences):
            if len(sentence.ids) > self.max_sentence_tokens:
                return LimitProblem(f"sentences[{index}]", len(sentence.ids), self.max_sentence_tokens, "tokens")
        return None

    def __call__(self, texts: Sequence[str], timings: StageTimings | None = None) -> list[DocumentPrediction]:
        timings = timings or StageTimings()
        with timings.stage("tokenize"):
            documents = [self._sentences(text) for text in texts]
            for sentences in documents:
                # The servicer refuses these by name first; a direct caller gets the same limits.
                if not sentences or self._problem(sentences) is not None:
                    raise ValueError("a document must hold 1 to max_sentences sentences of max_tokens tokens")
            n_sentences = max(len(d) for d in documents)
            n_words = max(len(s.ids) for d in documents for s in d)
            input_ids = np.full((len(documents), n_sentences, n_words), self.pad_id, dtype=np.int64)
            attention_mask = np.zeros_like(input_ids)
            for i, sentences in enumerate(documents):
                for j, sentence in enumerate(sentences):
                    input_ids[i, j, : len(sentence.ids)] = sentence.ids
                    attention_mask[i, j, : len(sentence.ids)] = 1
            timings.padding_ratio = 1.0 - float(attention_mask.sum()) / attention_mask.size
        with timings.stage("inference"):
            document_probs, sentence_weights, sentence_probs, word_weights = self.model.session.run(
                OUTPUTS, {"input_ids": input_ids, "attention_mask": attention_mask})
        with timings.stage("postprocess"):
            return [self._prediction(sentences, document_probs[i], sentence_weights[i], sentence_probs[i],
                                     word_weights[i]) for i, sentences in enumerate(documents)]

    def _probabilities(self, probs: np.ndarray) -> tuple[str, dict[str, float]]:
        return (self.labels[int(np.argmax(probs))],
                {label: float(p) for label, p in zip(self.labels, probs, strict=True)})

    def _prediction(self, sentences: list[_Sentence], document_probs: np.ndarray, sentence_weights: np.ndarray,
                    sentence_probs: np.ndarray, word_weights: np.ndarray) -> DocumentPrediction:
        label, probabilities = self._probabilities(document_probs)
        answered = []
        for j, sentence in enumerate(sentences):
            sentence_label, sentence_probabilities = self._probabilities(sentence_probs[j])
            tokens = [TokenWeight(token, float(w), int(s), int(e)) for token, w, (s, e)
                      in zip(sentence.tokens, word_weights[j, : len(sentence.ids)], sentence.offsets, strict=True)]
            answered.append(SentencePrediction(sentence.start, sentence.end, float(sentence_weights[j]),
                                               sentence_label, sentence_probabilities, tokens))
        return DocumentPrediction(label, probabilities, answered)
