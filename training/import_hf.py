"""Import a local Hugging Face checkpoint (a folder on disk; never the hub) as a served model version:

    python -m training.import_hf DIR --task ner --name NAME [--out exported/] [--version V]
    python -m training.import_hf DIR --task translation --name NAME --source-language en --target-language de
    python -m training.import_hf DIR --task classification --name NAME

ner:          a BERT-family token classifier (WordPiece tokenizer.json, BIO tags in config.id2label), served
              by the MiniLM NER pipeline with the checkpoint's own tags (training/export/hf_ner.py).
translation:  a Marian or BART encoder-decoder with a tokenizer.json, exported as encoder + KV-cached decoder-step
              graphs in our decoding contract (training/export/hf_translation.py).
classification: a BERT-family sequence classifier (WordPiece tokenizer.json, labels in config.id2label),
              served by Classification.Classify with the checkpoint's labels; its graph gives softmax(logits)
              and the last layer's [CLS] attention over the text's subwords (training/export/hf_classification.py).

Each export is checked against the torch model (parity recorded in the manifest) before it is published.
docs/your-own-models.md is the tutorial.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Sequence

import torch

from training.byo.common import REPO_ROOT, check_destination, check_name, version_dir
from training.export.hf_checkpoint import ImportRefused

TASKS = ("classification", "ner", "translation")


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.import_hf", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=pathlib.Path, help="the folder save_pretrained wrote")
    parser.add_argument("--task", choices=TASKS, required=True)
    parser.add_argument("--name", required=True, help="the model name clients will ask for")
    parser.add_argument("--out", type=pathlib.Path, default=REPO_ROOT / "exported",
                        help="the model repository to publish into (default: exported/)")
    parser.add_argument("--version", default="", help="version folder (default: the next free number)")
    parser.add_argument("--source-language", default="", help="translation: the source language code")
    parser.add_argument("--target-language", default="", help="translation: the target language code")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for export and parity")
    return parser.parse_args(list(argv))


def run(args: argparse.Namespace) -> pathlib.Path:
    """Publish the version; returns its folder. Raises ImportRefused/ValueError with the reason."""
    check_name(args.name)
    if args.task == "translation" and not (args.source_language and args.target_language):
        raise ImportRefused("--task translation needs --source-language and --target-language (language codes "
                            "the Translate call reports)")
    torch.set_num_threads(max(1, args.threads))
    target = version_dir(args.out, args.name, args.version)
    # An existing version may be serving; a name of another task's model would mix two tasks in one folder.
    check_destination(args.out, args.name, target, args.task)
    if args.task == "classification":
        from training.export.hf_classification import import_classification

        manifest = import_classification(args.checkpoint, target, args.name)
    elif args.task == "ner":
        from training.export.hf_ner import import_ner

        manifest = import_ner(args.checkpoint, target, args.name)
    else:
        from training.export.hf_translation import import_translation

        manifest = import_translation(args.checkpoint, target, args.name, args.source_language, args.target_language)
    print(f"published {target} ({manifest['task']}); export parity: {manifest['export_parity']}")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        run(args)
    except ValueError as exc:  # ImportRefused included: a clear reason, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
