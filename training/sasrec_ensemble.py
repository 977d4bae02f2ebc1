"""Serve several SASRec runs as one model:  python -m training.sasrec_ensemble RUN_DIR... --version N

Each RUN_DIR is the checkpoint dir of a `training.train_recommendation` run with the committed config and
another --seed (best.pt: the best dev epoch's weights, history.json: its dev curve). Every member and the
ensemble (mean item scores, mean attention; training/models/sasrec.py) are scored on dev first, and
the ensemble is published only if it beats every member there: the choice is made on dev. Then it is
exported like a single run (one ONNX graph, same inputs and outputs, so the service needs nothing new),
with parity and the test metrics through the served pipeline in the manifest.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pathlib
from typing import Any

import torch

from training.configs import recommendation as cfg
from training.data.movielens import load_splits
from training.loop import TrainResult, config_dict
from training.models.sasrec import SASRec, SASRecConfig, SASRecEnsemble
from training.train_recommendation import Trained, describe_loss, dev_evaluator, export_version

log = logging.getLogger("sasrec_ensemble")


def load_member(run_dir: pathlib.Path) -> tuple[SASRec, dict[str, Any]]:
    saved = torch.load(run_dir / "best.pt", weights_only=False)
    model = SASRec(SASRecConfig(**saved["extra"]["model_config"]))
    model.load_state_dict(saved["model"])
    model.eval()
    history = json.loads((run_dir / "history.json").read_text())
    return model, {"run": run_dir.name, "best_dev": saved["metrics"], "epochs_run": len(history),
                   "train_seconds": round(history[-1]["seconds"]) if history else 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=pathlib.Path, nargs="+", help="checkpoint dirs of single runs")
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="each run's --seed, in order")
    parser.add_argument("--version", required=True)
    parser.add_argument("--out", default="exported")
    args = parser.parse_args()
    if len(args.seeds) != len(args.runs) or len(args.runs) < 2:
        parser.error("give two or more runs and one seed per run")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)
    data, splits, data_info = load_splits(cfg.DATASET)
    loaded = [load_member(run) for run in args.runs]
    ensemble = SASRecEnsemble([model for model, _ in loaded])
    evaluate = dev_evaluator(splits.dev, {u: set(h) for u, h in data.histories.items()},
                             {u: i for i, u in enumerate(data.histories)}, data.num_items, ensemble.config.max_length)
    with torch.no_grad():
        member_dev = [evaluate(model) for model, _ in loaded]
        ensemble_dev = evaluate(ensemble)
    log.info("dev members %s, ensemble %s", member_dev, ensemble_dev)
    for metric in ("full_ndcg@10", "sampled_hr@10"):
        if ensemble_dev[metric] <= max(m[metric] for m in member_dev):
            raise SystemExit(f"the ensemble does not beat its best member on dev {metric}: not published")
    members = [{**info, "seed": seed, "dev": dev} for (_, info), seed, dev in zip(loaded, args.seeds, member_dev,
                                                                                strict=True)]
    loop_config = dataclasses.replace(cfg.LOOP, seed=args.seeds[0])
    trained = Trained(ensemble, data, splits, data_info,  # type: ignore[arg-type]
                      TrainResult(ensemble_dev[cfg.LOOP.metric], -1, 0, sum(m["train_seconds"] for m in members)),
                      loop_config, cfg.ALL_WINDOWS, cfg.BATCH_SIZE, cfg.LOSS, negatives=cfg.NEGATIVES)
    record = {**config_dict(ensemble.config, loop_config), "batch_size": cfg.BATCH_SIZE, "loss": cfg.LOSS,
              "negatives": cfg.NEGATIVES,
              "all_windows": cfg.ALL_WINDOWS, "ensemble": {"members": members, "combine": "mean of item scores "
              "(softmax logits) and of the attention", "dev": ensemble_dev},
              "parameters": sum(p.numel() for p in ensemble.parameters())}
    description = (f"Ensemble of {len(members)} SASRecs (causal self-attention over the item history; seeds "
                   f"{', '.join(map(str, args.seeds))}) trained with {describe_loss(cfg.LOSS, cfg.NEGATIVES)} on "
                   f"MovieLens ({data_info['dataset']}), leave-one-out; mean of their item scores.")
    version_dir = pathlib.Path(args.out) / cfg.MODEL_NAME / args.version
    manifest_data = export_version(trained, version_dir, cfg.MODEL_NAME, description=description,
                                   training_record=record)
    print(json.dumps({"dev": {"members": member_dev, "ensemble": ensemble_dev},
                      "parity": manifest_data["parity"], "metrics": manifest_data["metrics"]}, indent=1))


if __name__ == "__main__":
    main()
