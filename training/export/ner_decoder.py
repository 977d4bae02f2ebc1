"""Publish an NER version as a new version that decodes differently, with the same weights:

    python -m training.export.ner_decoder exported/ner-minilm-int8/1 --out exported/ner-minilm-int8/2 \
        --decoder bio-viterbi

A decoder changes what users get, so it gets a version of its own (a published version never changes
behaviour). The graph and tokenizer are copied unchanged (git stores the identical blob once); the
manifest says where they come from, records the dev F1 of the source's decoder and the new one (the
choice between decoders is made on dev), and the new version's test metrics and challenge-set figures
(training/evaluate/ner_challenge.py) through the served path.

`--decoder transition-viterbi` writes the chain it decodes over to transitions.json (named by ner.crf):
the BIO constraints plus one transition score estimated on the train tags, for a word that starts a new
entity of the type the previous word's entity has (B-x after B-x or I-x). Train has 5 such words against
849 that continue the entity, so a tagger whose per-word softmax says B-x twice ("Los/B Angeles/B") is
read as one name unless it is sure of two. Scoring every transition with train's log-probabilities was
measured too and lost on dev (docs/ner.md): the tagger's per-word posteriors already see the context.
"""

from __future__ import annotations

import argparse
import itertools
import json
import pathlib
import shutil
from collections.abc import Sequence
from typing import Any

import numpy as np

from service.model.manifest import read_manifest, republish_manifest
from service.pipelines.crf_decoding import CRFParameters, bio_constraints
from service.pipelines.ner import ARGMAX, BIO_VITERBI, TRANSITION_VITERBI
from training.data.ner import Tweet, load_splits, word_tags
from training.evaluate.ner import evaluate_version
from training.evaluate.ner_challenge import evaluate_challenge

CHAIN_FILE = "transitions.json"


def dev_f1(version_dir: pathlib.Path, parts: dict[str, Any]) -> float:
    return evaluate_version(version_dir, parts["dev"], parts["train"])["served"]["micro"]["f1-score"]


def same_type_restart_score(tag_sequences: Sequence[Sequence[str]]) -> tuple[float, dict[str, int]]:
    """log P(B-x | previous word in an x entity, this word x), add-one smoothed, and the counts."""
    counts = {"restart": 0, "continue": 0}
    for tags in tag_sequences:
        for previous, tag in itertools.pairwise(tags):
            if previous != "O" and tag != "O" and previous[2:] == tag[2:]:
                counts["restart" if tag.startswith("B-") else "continue"] += 1
    return float(np.log((counts["restart"] + 1) / (counts["restart"] + counts["continue"] + 2))), counts


def transition_chain(labels: Sequence[str], train: list[Tweet]) -> tuple[CRFParameters, dict[str, Any]]:
    """The BIO constraints plus the same-type restart score on every B-x after B-x or I-x."""
    score, counts = same_type_restart_score([word_tags(tweet)[1] for tweet in train])
    bio = bio_constraints(labels)
    transitions = bio.transitions.copy()
    for j, to in enumerate(labels):
        for i, source in enumerate(labels):
            if to.startswith("B-") and source != "O" and source[2:] == to[2:]:
                transitions[i, j] += score
    record = {"same_type_restart_log_probability": round(score, 4), "train_word_counts": counts,
              "estimated_on": "train split, word tags (training.data.ner.word_tags), add-one smoothed"}
    return CRFParameters(bio.start, bio.end, transitions), record


def write_chain(chain: CRFParameters, path: pathlib.Path) -> None:
    path.write_text(json.dumps({"start": chain.start.tolist(), "end": chain.end.tolist(),
                                "transitions": chain.transitions.tolist()}), encoding="utf-8")


def republish(source: pathlib.Path, out: pathlib.Path, decoder: str) -> dict[str, Any]:
    manifest = read_manifest(source)
    if manifest.data["ner"].get("tagger") != "minilm":
        raise SystemExit(f"{source}: only the MiniLM tagger has a choice of decoder")
    old_decoder = manifest.data["ner"].get("decoder", ARGMAX)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for path in source.iterdir():
        if path.name not in ("manifest.json", CHAIN_FILE):
            shutil.copy2(path, out / path.name)
    parts, _ = load_splits()
    ner = {k: v for k, v in manifest.data["ner"].items() if k != "crf"}
    chain_record: dict[str, Any] = {}
    if decoder == TRANSITION_VITERBI:
        chain, chain_record = transition_chain(manifest.data["labels"], parts["train"])
        write_chain(chain, out / CHAIN_FILE)
        ner["crf"] = CHAIN_FILE
    derived = republish_manifest(out, {
        "version": out.name,
        "ner": {**ner, "decoder": decoder},
        "derived_from": {"name": manifest.name, "version": manifest.data["version"],
                         "model_sha256": manifest.data["files"]["model.onnx"],
                         "change": f"decoder {old_decoder!r} -> {decoder!r}; same graph, tokenizer and labels"},
    }, drop=("metrics", "comparison"), source=manifest)
    dev = {old_decoder: dev_f1(source, parts), decoder: dev_f1(out, parts)}
    selection: dict[str, Any] = {"split": "dev", "entity_f1": dev}
    report = evaluate_version(out, parts["test"], parts["train"])
    if "repeated_splits" in manifest.data.get("metrics", {}):  # runs of the training recipe, not of a decoder
        report["repeated_splits"] = {**manifest.data["metrics"]["repeated_splits"],
                                     "measured_for": f"version {manifest.data['version']} ({old_decoder})"}
    if chain_record:
        selection["transitions"] = chain_record
    report["challenge"] = evaluate_challenge(out)
    republish_manifest(out, {"decoder_selection": selection, "metrics": report}, source=derived)
    return {"decoder_selection": selection, "test_micro": report["served"]["micro"],
            "challenge": report["challenge"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source_dir", type=pathlib.Path)
    parser.add_argument("--out", type=pathlib.Path, required=True, help="exported/<name>/<new version>")
    parser.add_argument("--decoder", default=BIO_VITERBI, choices=[ARGMAX, BIO_VITERBI, TRANSITION_VITERBI])
    args = parser.parse_args()
    print(json.dumps(republish(args.source_dir, args.out, args.decoder), indent=1))


if __name__ == "__main__":
    main()
