"""The three translators side by side: training throughput and decoding speed, measured in one run.

    OMP_NUM_THREADS=1 python -m training.translation_throughput [--steps 12] [--verses 64] [--json out.json]

Training (the survey's claim that ConvS2S trains faster than an RNN and a Transformer): one optimiser step
(forward, label-smoothed loss, backward, gradient clipping, AdamW) of the Transformer, the GRU seq2seq and
ConvS2S, each built at its committed config (training/configs/translation_*.py) on the joint 8k
vocabulary, fed the *same* real training batches (token_budget_batches over the length-filtered train
split, BATCH_TOKENS padded target tokens each). After WARMUP steps each, the models take turns step by
step (A, B, C, A, B, C, ...), so whatever else runs on the shared cores slows all three alike. Reported:
target tokens per second of wall-clock and per second of this thread's CPU time (the latter is what a free
core would give; the former what this machine gave).

Decoding (served): the committed versions through `service.pipelines.translation` (the code the server
runs), greedy and beam 4, on the same test verses (every k-th verse of the test chapters), one text per
call and `--batch` texts per call, the models again taking turns round by round. Target tokens: the
best hypothesis's subwords ([EOS] not counted).

torch and onnxruntime use one thread (the machine is shared; it is also the served default).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import nn

from service.model.manifest import republish_manifest
from service.pipelines.translation import DecodeOptions, TranslationPipeline, TranslationRequest
from service.runtime.version_loader import load_version
from training.batching import pad_batch, token_budget_batches
from training.configs import translation_convs2s, translation_seq2seq, translation_transformer
from training.configs.checkpoints import REPO
from training.data.translation import TranslationPair, load_splits
from training.decoding import source_ids
from training.models.convs2s import ConvS2S, ConvS2SConfig
from training.models.seq2seq_attention import Seq2SeqAttention, Seq2SeqConfig
from training.models.transformer import Transformer, TransformerConfig
from training.optim import decay_groups
from training.token_ids import special_id
from training.tokenizer import BOS, EOS, PAD
from training.translation_run import target_ids

BATCH_TOKENS = 3000  # the GRU's and ConvS2S's committed budget (the Transformer's is 2500): one for all three
WARMUP = 2
SERVED = ("transformer", "seq2seq-attention", "convs2s")


@dataclass(frozen=True)
class Architecture:
    name: str
    model_class: Callable[[Any], nn.Module]
    config_class: Callable[..., Any]
    settings: dict[str, Any]  # the committed config's MODEL

    def build(self, ids: dict[str, int]) -> nn.Module:
        """The model at its committed config on the vocabulary and special ids in `ids`."""
        return self.model_class(self.config_class(**ids, **self.settings))


ARCHITECTURES = [
    Architecture("transformer", Transformer, TransformerConfig, translation_transformer.MODEL),
    Architecture("seq2seq-attention", Seq2SeqAttention, Seq2SeqConfig, translation_seq2seq.MODEL),
    Architecture("convs2s", ConvS2S, ConvS2SConfig, translation_convs2s.MODEL),
]


def cpu_seconds() -> float:
    return time.thread_time()  # this thread only: torch runs on it with one intra-op thread


def training_batches(tokenizer: Tokenizer, pairs: list[TranslationPair], count: int, seed: int
                     ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """`count` real training batches (the first of one shuffled epoch), padded as the run pads them."""
    sources = source_ids(tokenizer, [p.source for p in pairs])
    targets = target_ids(tokenizer, [p.target for p in pairs])
    batches = token_budget_batches([len(t) - 1 for t in targets], BATCH_TOKENS, seed=seed)[:count]
    pad = special_id(tokenizer, PAD)
    return [(*pad_batch([sources[i] for i in batch], pad), *pad_batch([targets[i] for i in batch], pad))
            for batch in batches]


def measure_training(tokenizer: Tokenizer, pairs: list[TranslationPair], steps: int) -> dict[str, Any]:
    ids = {"vocab_size": tokenizer.get_vocab_size(), "pad_id": special_id(tokenizer, PAD),
           "bos_id": special_id(tokenizer, BOS), "eos_id": special_id(tokenizer, EOS)}
    batches = training_batches(tokenizer, pairs, WARMUP + steps, seed=13)
    criterion = nn.CrossEntropyLoss(ignore_index=ids["pad_id"], label_smoothing=0.1)
    runs = []
    for architecture in ARCHITECTURES:
        torch.manual_seed(13)
        model = architecture.build(ids).train()
        optimizer = torch.optim.AdamW(decay_groups(model, 1e-4), lr=1e-4)
        runs.append((architecture.name, model, optimizer))

    def step(model: nn.Module, optimizer: torch.optim.Optimizer, index: int) -> tuple[float, float, int]:
        src, src_mask, tgt, tgt_mask = batches[index]
        wall, cpu = time.perf_counter(), cpu_seconds()
        optimizer.zero_grad(set_to_none=True)
        logits = model(src, src_mask, tgt[:, :-1], tgt_mask[:, :-1])
        loss = criterion(logits.reshape(-1, logits.shape[-1]), tgt[:, 1:].reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return time.perf_counter() - wall, cpu_seconds() - cpu, int(tgt_mask[:, 1:].sum())

    for _, model, optimizer in runs:
        for index in range(WARMUP):
            step(model, optimizer, index)
    totals = {name: [0.0, 0.0, 0.0] for name, _, _ in runs}  # wall, CPU, tokens
    per_step_cpu: dict[str, list[float]] = {name: [] for name, _, _ in runs}
    for index in range(WARMUP, WARMUP + steps):
        for name, model, optimizer in runs:  # turns: shared-machine noise hits all three alike
            wall, cpu, tokens = step(model, optimizer, index)
            totals[name][0] += wall
            totals[name][1] += cpu
            totals[name][2] += tokens
            per_step_cpu[name].append(cpu)
    return {
        name: {"parameters": sum(p.numel() for p in model.parameters()), "steps": steps,
               "target_tokens": int(totals[name][2]),
               "tokens_per_wall_second": round(totals[name][2] / totals[name][0], 1),
               "tokens_per_cpu_second": round(totals[name][2] / totals[name][1], 1),
               "median_cpu_seconds_per_step": round(statistics.median(per_step_cpu[name]), 3)}
        for name, model, _ in runs
    }


def decode_round(pipeline: TranslationPipeline, texts: list[str], options: DecodeOptions, batch: int
                 ) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, target tokens) for translating `texts`, `batch` per call."""
    wall, cpu, tokens = time.perf_counter(), cpu_seconds(), 0
    for start in range(0, len(texts), batch):
        for result in pipeline([TranslationRequest(t, options) for t in texts[start : start + batch]]):
            assert result is not None
            tokens += len(result.hypotheses[0].tokens)
    return time.perf_counter() - wall, cpu_seconds() - cpu, tokens


def measure_decoding(texts: list[str], batch: int, rounds: int, models: tuple[str, ...]) -> dict[str, Any]:
    pipelines = {name: TranslationPipeline(load_version(latest_version(name))) for name in models}
    settings = {"greedy": DecodeOptions(beam_size=1), "beam4": DecodeOptions(beam_size=4, length_penalty=0.6)}
    results: dict[str, Any] = {}
    for setting, options in settings.items():
        for per_call in (1, batch):
            key = f"{setting}_batch{per_call}"
            for pipeline in pipelines.values():  # warm-up
                decode_round(pipeline, texts[:2], options, per_call)
            sums = {name: [0.0, 0.0, 0.0] for name in pipelines}  # wall, CPU, tokens
            for _ in range(rounds):
                for name, pipeline in pipelines.items():
                    wall, cpu, tokens = decode_round(pipeline, texts, options, per_call)
                    sums[name] = [sums[name][0] + wall, sums[name][1] + cpu, sums[name][2] + tokens]
            for name, (wall_total, cpu_total, token_total) in sums.items():
                results.setdefault(name, {})[key] = {
                    "target_tokens": int(token_total), "tokens_per_wall_second": round(token_total / wall_total, 1),
                    "tokens_per_cpu_second": round(token_total / cpu_total, 1)}
    return results


def latest_version(name: str) -> pathlib.Path:
    folder = REPO / "exported" / name
    return max((p for p in folder.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12, help="measured optimiser steps per model")
    parser.add_argument("--verses", type=int, default=64, help="test verses decoded per round")
    parser.add_argument("--batch", type=int, default=32, help="texts per pipeline call in the batched setting")
    parser.add_argument("--rounds", type=int, default=2, help="decoding rounds per model and setting")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--skip-decoding", action="store_true")
    parser.add_argument("--json", type=pathlib.Path, default=None, help="also write the results here")
    parser.add_argument("--from-json", type=pathlib.Path, default=None,
                        help="start from an earlier run's results (keep its training part, say, and measure decoding)")
    parser.add_argument("--write-manifest", type=pathlib.Path, default=None,
                        help="a version folder whose manifest records the results as `throughput_comparison`")
    args = parser.parse_args()
    torch.set_num_threads(1)
    parts, data_info = load_splits(translation_convs2s.MAX_WORDS_TRAIN)
    tokenizer = Tokenizer.from_file(translation_convs2s.SHARED_TOKENIZER)
    report: dict[str, Any] = json.loads(args.from_json.read_text()) if args.from_json else {}
    report.update({"batch_tokens": BATCH_TOKENS, "warmup_steps": WARMUP, "threads": 1,
                   "train_sha256": data_info["train_sha256"], "command": "python -m training.translation_throughput"})
    if not args.skip_training:
        report["training"] = {"measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                              **measure_training(tokenizer, list(parts["train"]), args.steps)}
        print(json.dumps(report["training"], indent=1), flush=True)
    if not args.skip_decoding:
        test = list(parts["test"])
        texts = [p.source for p in test[:: max(1, len(test) // args.verses)][: args.verses]]
        report["decoding"] = {"measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                              "verses": len(texts), "batch": args.batch, "rounds": args.rounds,
                              "results": measure_decoding(texts, args.batch, args.rounds, SERVED)}
        print(json.dumps(report["decoding"], indent=1), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.write_manifest is not None:
        republish_manifest(args.write_manifest, {"throughput_comparison": report})


if __name__ == "__main__":
    main()
