"""Learning curves of the committed NER taggers (dev entity F1 against training time), from the
`training.history` their manifests record:  python -m training.evaluate.ner_curves docs/ner_learning_curves.png
"""

from __future__ import annotations

import argparse
import json
import pathlib

MODELS = ("ner-bilstm-crf", "ner-minilm-int8")


def newest_manifest(exported: pathlib.Path, name: str) -> dict:
    versions = sorted((p for p in (exported / name).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return json.loads((versions[-1] / "manifest.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--exported", type=pathlib.Path, default=pathlib.Path("exported"))
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for name in MODELS:
        manifest = newest_manifest(args.exported, name)
        history = manifest["training"]["history"]
        test_f1 = manifest["metrics"]["served"]["micro"]["f1-score"]
        axis.plot([h["seconds"] / 60 for h in history], [h["entity_f1"] for h in history], marker=".",
                  label=f"{name} v{manifest['version']} (served test F1 {test_f1:.3f})")
    axis.set_xlabel("training minutes (1 thread, shared 2-core machine)")
    axis.set_ylabel("dev entity F1 (seqeval)")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
