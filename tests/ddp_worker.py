"""Run by test_training_loop under `torchrun --nproc_per_node 2`: a few DDP steps of the real sentiment
model on real sentences through the shared loop; each rank then writes what it trained on and a
fingerprint of its weights, so the test can check the ranks split the data and stayed in sync."""

from __future__ import annotations

import hashlib
import json
import pathlib
import sys

import torch
from tokenizers import Tokenizer
from torch import nn

from training.batching import bucketed_batches, pad_batch
from training.data.sentiment import load_splits
from training.loop import LoopConfig, build_once, distributed_context, train
from training.models.sentiment_classifier import BiGRUAttentionClassifier, SentimentModelConfig
from training.tokenizer import PAD, train_bpe


def main() -> None:
    out = pathlib.Path(sys.argv[1])
    rank, _ = distributed_context()
    sentences = load_splits()[0]["train"][:512]
    tokenizer_path = out / "tokenizer.json"
    build_once(tokenizer_path, lambda path: train_bpe([s.text for s in sentences], vocab_size=500).save(str(path)))
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    ids = [e.ids or [1] for e in tokenizer.encode_batch([s.text for s in sentences])]
    labels = [s.label for s in sentences]
    torch.manual_seed(0)
    model = BiGRUAttentionClassifier(SentimentModelConfig(vocab_size=tokenizer.get_vocab_size(),
                                                          embedding_dim=16, hidden_dim=16, attention_dim=16))
    initial = [p.detach().clone() for p in model.parameters()]
    seen: list[int] = []

    def loss_fn(module: nn.Module, batch: list[int]) -> tuple[torch.Tensor, int]:
        seen.extend(batch)
        x, mask = pad_batch([ids[i] for i in batch], tokenizer.token_to_id(PAD))
        logits, _ = module(x, mask)
        return nn.functional.cross_entropy(logits, torch.tensor([labels[i] for i in batch])), len(batch)

    config = LoopConfig(max_epochs=1, max_steps=6, checkpoint_dir=str(out / "ckpt"), learning_rate=1e-2)
    train(model, lambda epoch: bucketed_batches([len(x) for x in ids], 16, seed=epoch), loss_fn,
          lambda m: {"macro_f1": 0.0}, config)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    moved = max((p.detach() - q).abs().max().item() for p, q in zip(model.parameters(), initial, strict=True))
    (out / f"rank{rank}.json").write_text(json.dumps({
        "fingerprint": hashlib.sha256(flat.numpy().tobytes()).hexdigest(),
        "seen": seen,
        "moved": moved,
    }))


if __name__ == "__main__":
    main()
