"""Publish an NER version as a new version that decodes differently, with the same weights:

    python -m training.export.ner_decoder exported/ner-minilm-int8/1 --out exported/ner-minilm-int8/2 \
        --decoder bio-viterbi

A decoder changes what users get, so it gets a version of its own (a published version never changes
behaviour). The graph and tokenizer are copied unchanged (git stores the identical blob once); the
manifest says where they come from, records the dev F1 of the source's decoder and the new one (the
choice between decoders is made on dev), and the new version's test metrics through the served path.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
from typing import Any

from service.model.manifest import read_manifest, republish_manifest
from service.pipelines.ner import ARGMAX, BIO_VITERBI
from training.data.ner import load_splits
from training.evaluate.ner import evaluate_version


def dev_f1(version_dir: pathlib.Path, parts: dict[str, Any]) -> float:
    return evaluate_version(version_dir, parts["dev"], parts["train"])["served"]["micro"]["f1-score"]


def republish(source: pathlib.Path, out: pathlib.Path, decoder: str) -> dict[str, Any]:
    manifest = read_manifest(source)
    if manifest.data["ner"].get("tagger") != "minilm":
        raise SystemExit(f"{source}: only the MiniLM tagger has a choice of decoder")
    old_decoder = manifest.data["ner"].get("decoder", ARGMAX)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for path in source.iterdir():
        if path.name != "manifest.json":
            shutil.copy2(path, out / path.name)
    derived = republish_manifest(out, {
        "version": out.name,
        "ner": {**manifest.data["ner"], "decoder": decoder},
        "derived_from": {"name": manifest.name, "version": manifest.data["version"],
                         "model_sha256": manifest.data["files"]["model.onnx"],
                         "change": f"decoder {old_decoder!r} -> {decoder!r}; same graph, tokenizer and labels"},
    }, drop=("metrics", "comparison"), source=manifest)
    parts, _ = load_splits()
    selection = {"split": "dev", "entity_f1": {old_decoder: dev_f1(source, parts), decoder: dev_f1(out, parts)}}
    report = evaluate_version(out, parts["test"], parts["train"])
    if "repeated_splits" in manifest.data.get("metrics", {}):  # runs of the training recipe, not of a decoder
        report["repeated_splits"] = {**manifest.data["metrics"]["repeated_splits"],
                                     "measured_for": f"version {manifest.data['version']} ({old_decoder})"}
    republish_manifest(out, {"decoder_selection": selection, "metrics": report}, source=derived)
    return {"decoder_selection": selection, "test_micro": report["served"]["micro"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source_dir", type=pathlib.Path)
    parser.add_argument("--out", type=pathlib.Path, required=True, help="exported/<name>/<new version>")
    parser.add_argument("--decoder", default=BIO_VITERBI, choices=[ARGMAX, BIO_VITERBI])
    args = parser.parse_args()
    print(json.dumps(republish(args.source_dir, args.out, args.decoder), indent=1))


if __name__ == "__main__":
    main()
