"""NER: raw text -> words with offsets -> tagger (onnxruntime) -> BIO tags -> entities with offsets.

Two taggers sit behind the same pipeline, told apart by the manifest's `ner.tagger`:
- "bilstm-crf": word/char/shape ids -> emissions graph -> numpy Viterbi with the saved CRF parameters;
  a word's confidence is its CRF marginal probability (forward-backward) of the decoded tag.
- "minilm": BERT subwords -> tag logits graph, read at each word's first subword -> log-softmax ->
  Viterbi under BIO constraints (`ner.decoder` = "bio-viterbi"; models published before it use argmax);
  a word's confidence is its marginal probability under those constraints (the softmax with argmax).
  `ner.decoder` = "transition-viterbi" adds transition scores estimated on train tags, read from the
  file `ner.crf` names (same format as a BiLSTM-CRF's crf.json, the BIO constraints included).
A dynamically quantized graph (either tagger) is handed one text at a time (service/batching/runs.py),
so batch-mates never change an answer.

Entities follow the conlleval reading of BIO (as seqeval does by default): B-x starts an entity, I-x
continues an x entity or else starts one, O ends it. An entity's offsets run from its first word's
start to its last word's end, as Python str code-point offsets into the text as sent, so
`text[start:end] == entity.text` always; its confidence is the mean of its words' confidences.
The server and the evaluation command both call this class, so published quality is served quality.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.model.loaded_model import LoadedModel
from service.model.pipeline import Pipeline
from service.model.timing import StageTimings
from service.pipelines.crf_decoding import CRFParameters, bio_constraints, marginals, viterbi
from service.pipelines.ner_features import SHAPE_ID, WordFeaturizer, word_shape
from service.pipelines.ner_subwords import encode_words, prepare_tokenizer
from service.pipelines.ner_words import WORD_PATTERN, Word, split_words

TASK = "ner"
BIO_VITERBI = "bio-viterbi"  # the MiniLM decoder that only emits valid BIO sequences
ARGMAX = "argmax at first subwords"
TRANSITION_VITERBI = "transition-viterbi"  # BIO Viterbi plus transition scores estimated on train (ner.crf)


@dataclass(frozen=True)
class TaggedWord:
    text: str
    start: int
    end: int
    tag: str
    confidence: float


@dataclass(frozen=True)
class Entity:
    type: str
    text: str
    start: int  # code-point offsets into the text as sent: text[start:end] == self.text
    end: int
    confidence: float


@dataclass(frozen=True)
class NerPrediction:
    entities: list[Entity]
    words: list[TaggedWord]  # every tagged word, in order
    truncated: bool  # the text had more words than the model tags; the rest are untagged


def entities_from_tags(text: str, words: Sequence[TaggedWord]) -> list[Entity]:
    spans: list[tuple[str, list[TaggedWord]]] = []
    current: tuple[str, list[TaggedWord]] | None = None  # the entity the previous word belongs to
    for word in words:
        prefix, _, kind = word.tag.partition("-")
        if prefix == "I" and current is not None and current[0] == kind:
            current[1].append(word)
        elif prefix in ("B", "I"):
            current = (kind, [word])
            spans.append(current)
        else:
            current = None
    return [
        Entity(kind, text[members[0].start : members[-1].end], members[0].start, members[-1].end,
               float(np.mean([w.confidence for w in members])))
        for kind, members in spans
    ]


class NerPipeline(Pipeline[str, NerPrediction]):
    def __init__(self, model: LoadedModel) -> None:
        if model.task != TASK:
            raise ValueError(f"model {model.name} is not an NER model")
        settings = model.manifest.spec.ner
        if settings is None:
            raise ValueError(f"model {model.name} has no ner section")
        if settings.word_pattern != WORD_PATTERN:
            # The tagger learned on words cut by one pattern; another would hand it unseen units.
            raise ValueError(f"model {model.name} was trained on other word boundaries than this server's")
        self.model = model
        self.labels = model.manifest.labels
        self.tagger = settings.tagger
        self.max_words = model.manifest.spec.limits.max_words or 128
        if self.tagger == "bilstm-crf":
            if settings.vocab is None or settings.crf is None or settings.max_word_chars is None:
                raise ValueError(f"model {model.name}: a bilstm-crf tagger needs ner.vocab, ner.crf and "
                                 "ner.max_word_chars")
            vocab = _read_json(model, settings.vocab)
            self.featurizer = WordFeaturizer(vocab["words"], vocab["chars"], settings.max_word_chars)
            self.crf = CRFParameters.from_json(_read_json(model, settings.crf))
        elif self.tagger == "minilm":
            if model.tokenizer is None:
                raise ValueError(f"model {model.name} has no tokenizer")
            self.tokenizer = prepare_tokenizer(model.tokenizer)
            self.max_subwords = model.manifest.spec.limits.max_subwords or 256
            self.shape_features = settings.shape_features
            self.chain = self._minilm_chain(model, settings.decoder, settings.crf)
        else:
            raise ValueError(f"model {model.name}: unknown tagger {self.tagger!r}")

    def _minilm_chain(self, model: LoadedModel, decoder: str, chain_file: str | None) -> CRFParameters | None:
        """The chain Viterbi decodes the MiniLM's log-probabilities over; None decodes by argmax."""
        if decoder == ARGMAX:
            return None
        if decoder == BIO_VITERBI:
            return bio_constraints(self.labels)
        if decoder == TRANSITION_VITERBI:
            if chain_file is None:
                raise ValueError(f"model {model.name}: decoder {decoder!r} needs ner.crf (its transition scores)")
            chain = CRFParameters.from_json(_read_json(model, chain_file))
            size = len(self.labels)
            if chain.start.shape != (size,) or chain.end.shape != (size,) or chain.transitions.shape != (size, size):
                raise ValueError(f"model {model.name}: {chain_file} does not hold {size} tags' transitions")
            return chain
        raise ValueError(f"model {model.name}: unknown decoder {decoder!r}")

    def estimate_tokens(self, text: str) -> int:
        """A cheap length guess for batch grouping: about 5 characters a word."""
        return min(self.max_words, len(text) // 5 + 1)

    def __call__(self, texts: Sequence[str], timings: StageTimings | None = None) -> list[NerPrediction]:
        timings = timings or StageTimings()
        with timings.stage("tokenize"):
            all_words = [split_words(text) for text in texts]
            kept = [words[: self.max_words] for words in all_words]
        rows = [i for i, words in enumerate(kept) if words]  # a text of no words has no entities
        if self.tagger == "bilstm-crf":
            tags, truncated_more = self._tag_bilstm([kept[i] for i in rows], timings), [False] * len(rows)
        else:
            tags, truncated_more = self._tag_minilm([kept[i] for i in rows], timings)
        with timings.stage("postprocess"):
            predictions = [NerPrediction([], [], False) for _ in all_words]
            for row, index in enumerate(rows):
                tagged = [TaggedWord(w.text, w.start, w.end, tag, conf)
                          for w, (tag, conf) in zip(kept[index], tags[row], strict=False)]
                predictions[index] = NerPrediction(
                    entities_from_tags(texts[index], tagged), tagged,
                    truncated=len(all_words[index]) > len(tagged) or truncated_more[row],
                )
        return predictions

    def _tag_bilstm(self, sentences: list[list[Word]], timings: StageTimings) -> list[list[tuple[str, float]]]:
        if not sentences:
            return []
        texts = [[w.text for w in words] for words in sentences]
        with timings.stage("tokenize"):
            inputs = self.featurizer.batch(texts)
            timings.padding_ratio = 1.0 - float(inputs["mask"].sum()) / inputs["mask"].size
        with timings.stage("inference"):
            emissions = list(self.model.session.run(["emissions"], inputs)[0])  # one [words, tags] array per text
        with timings.stage("decode"):
            tagged = []
            for row, words in enumerate(sentences):
                scores = emissions[row][: len(words)]
                path = viterbi(scores, self.crf)
                probabilities = marginals(scores, self.crf)
                tagged.append([(self.labels[k], float(probabilities[t, k])) for t, k in enumerate(path)])
        return tagged

    def _tag_minilm(
        self, sentences: list[list[Word]], timings: StageTimings
    ) -> tuple[list[list[tuple[str, float]]], list[bool]]:
        if not sentences:
            return [], []
        with timings.stage("tokenize"):
            encoded = [encode_words(self.tokenizer, [w.text for w in words], self.max_subwords)
                       for words in sentences]
            width = max(len(row.ids) for row in encoded)
            input_ids = np.zeros((len(encoded), width), dtype=np.int64)  # [PAD] is id 0
            attention_mask = np.zeros((len(encoded), width), dtype=np.int64)
            shape_ids = np.zeros((len(encoded), width), dtype=np.int64)  # a word's shape at its first subword
            for i, (row, words) in enumerate(zip(encoded, sentences, strict=True)):
                input_ids[i, : len(row.ids)] = row.ids
                attention_mask[i, : len(row.ids)] = 1
                tagged_words = words[: len(row.first_positions)]
                shape_ids[i, row.first_positions] = [SHAPE_ID[word_shape(w.text)] for w in tagged_words]
            timings.padding_ratio = 1.0 - float(attention_mask.sum()) / attention_mask.size
            feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
            if self.shape_features:
                feeds["shape_ids"] = shape_ids
        with timings.stage("inference"):
            (logits,) = self.model.session.run(["logits"], feeds)
        with timings.stage("decode"):
            tagged = []
            for i, row in enumerate(encoded):
                scores = logits[i, row.first_positions].astype(np.float64)  # [words, tags]
                shifted = scores - scores.max(axis=1, keepdims=True)
                log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
                if self.chain is not None:
                    best = viterbi(log_probabilities, self.chain)
                    probabilities = marginals(log_probabilities, self.chain)
                else:
                    probabilities = np.exp(log_probabilities)
                    best = probabilities.argmax(axis=1).tolist()
                tagged.append([(self.labels[int(k)], float(probabilities[t, k])) for t, k in enumerate(best)])
        return tagged, [row.truncated for row in encoded]


def _read_json(model: LoadedModel, file_name: str) -> dict:
    return json.loads(model.manifest.path(file_name).read_text(encoding="utf-8"))
