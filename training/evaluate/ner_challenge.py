"""Multi-word names through the served pipeline: the NER challenge set (issue 19, item 4).

    python -m training.evaluate.ner_challenge exported/ner-minilm-int8/2 [--write-manifest]

`training/data/ner_challenge.jsonl` holds plain sentences of our own writing, each with obvious names of
one or more words (people, cities, teams, companies, a few venues and events), one JSON object a line:
the raw text and the gold BIO tag of each served word (`service/pipelines/ner_words.py` cuts the text,
so the tags line up with what the tagger sees). WNUT's 151 test entities hold few such names; this set
asks the question the WNUT split cannot: does a name of several words come back as one entity?

Scores, from the entities NerPipeline returns (the server's code), spans compared by exact code-point
offsets: entity precision/recall/F1 (type and span must match), the same ignoring type (is the name
found whole, whatever its type), and for the gold entities of two or more words, the share returned as
one entity with exactly their span (any type) and the share split into several entities inside it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
from dataclasses import dataclass
from typing import Any

from seqeval.metrics.sequence_labeling import get_entities

from service.batching.runs import run_pipeline
from service.model.manifest import read_manifest, republish_manifest
from service.pipelines.ner import NerPipeline
from service.pipelines.ner_words import split_words
from service.runtime.version_loader import load_version

CHALLENGE_FILE = pathlib.Path(__file__).resolve().parents[1] / "data" / "ner_challenge.jsonl"

Span = tuple[str, int, int]  # (type, start, end) in code points of the text


@dataclass(frozen=True)
class ChallengeSentence:
    text: str
    tags: tuple[str, ...]  # one per served word

    @property
    def entities(self) -> list[tuple[Span, int]]:
        """Gold entities with their length in words."""
        words = split_words(self.text)
        return [((kind, words[first].start, words[last].end), last - first + 1)
                for kind, first, last in get_entities(list(self.tags))]


def load_challenge(path: pathlib.Path = CHALLENGE_FILE) -> list[ChallengeSentence]:
    """The sentences, refusing a line whose tags do not fit its served words or do not read as BIO."""
    sentences = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        row = json.loads(line)
        text, tags = row["text"], tuple(row["tags"])
        words = split_words(text)
        if len(words) != len(tags):
            raise ValueError(f"{path.name}:{number}: {len(tags)} tags for {len(words)} served words")
        for position, tag in enumerate(tags):
            previous = tags[position - 1] if position else "O"
            if tag.startswith("I-") and previous[2:] != tag[2:]:
                raise ValueError(f"{path.name}:{number}: {tag} after {previous} at word {position}")
        sentences.append(ChallengeSentence(text, tags))
    return sentences


def _prf(correct: int, predicted: int, gold: int) -> dict[str, float]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}


def score_challenge(sentences: list[ChallengeSentence], predicted: list[list[Span]]) -> dict[str, Any]:
    correct = correct_untyped = n_predicted = n_gold = multi = whole = split = 0
    for sentence, spans in zip(sentences, predicted, strict=True):
        gold = sentence.entities
        gold_spans = {span for span, _ in gold}
        n_gold += len(gold_spans)
        n_predicted += len(spans)
        correct += len(gold_spans & set(spans))
        correct_untyped += len({s[1:] for s in gold_spans} & {s[1:] for s in spans})
        for (_, start, end), length in gold:
            if length < 2:
                continue
            multi += 1
            whole += any(s[1:] == (start, end) for s in spans)
            split += sum(start <= s[1] and s[2] <= end for s in spans) >= 2
    return {
        "sentences": len(sentences), "gold_entities": n_gold, "predicted_entities": n_predicted,
        "typed": _prf(correct, n_predicted, n_gold), "untyped": _prf(correct_untyped, n_predicted, n_gold),
        "multi_word_gold_entities": multi,
        "multi_word_returned_whole": round(whole / multi, 4) if multi else 0.0,
        "multi_word_split_in_several": round(split / multi, 4) if multi else 0.0,
    }


def evaluate_challenge(version_dir: pathlib.Path, path: pathlib.Path = CHALLENGE_FILE) -> dict[str, Any]:
    sentences = load_challenge(path)
    pipeline = NerPipeline(load_version(version_dir))
    texts = [s.text for s in sentences]
    predictions = run_pipeline(pipeline, texts)
    offset_errors = sum(text[e.start : e.end] != e.text
                        for text, p in zip(texts, predictions, strict=True) for e in p.entities)
    spans = [[(e.type, e.start, e.end) for e in p.entities] for p in predictions]
    return {**score_challenge(sentences, spans), "offset_errors": offset_errors,
            "file": f"training/data/{path.name}" if path == CHALLENGE_FILE else str(path),
            "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version_dir", type=pathlib.Path)
    parser.add_argument("--write-manifest", action="store_true", help="store the figures as metrics.challenge")
    args = parser.parse_args()
    result = evaluate_challenge(args.version_dir)
    print(json.dumps(result, indent=1))
    if args.write_manifest:
        metrics = read_manifest(args.version_dir).data.get("metrics", {})
        republish_manifest(args.version_dir, {"metrics": {**metrics, "challenge": result}})


if __name__ == "__main__":
    main()
