"""Run by test_training_loop under `torchrun --nproc_per_node 2`: a few DDP steps of the real sentiment
model on real sentences through the shared loop; each rank then writes what it trained on and a
fingerprint of its weights, so the test can check the ranks split the data and stayed in sync. The
same run is then repeated with both ranks crashing at step 3 and resuming from the step-2 checkpoint,
so the test can check that resuming under DDP ends with the same weights."""

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
    vocab_size = tokenizer.get_vocab_size()
    batches = bucketed_batches([len(x) for x in ids], 16, seed=0)

    def run(checkpoint_dir: pathlib.Path, crash_at_call: int = 0) -> tuple[nn.Module, list[int], float]:
        torch.manual_seed(0)
        model = BiGRUAttentionClassifier(SentimentModelConfig(vocab_size=vocab_size, embedding_dim=16,
                                                              hidden_dim=16, attention_dim=16, dropout=0.3))
        initial = [p.detach().clone() for p in model.parameters()]
        seen: list[int] = []
        calls = [0]

        def loss_fn(module: nn.Module, batch: list[int]) -> tuple[torch.Tensor, int]:
            calls[0] += 1
            if calls[0] == crash_at_call:  # every rank at the same step, so no collective is left waiting
                raise Crash
            seen.extend(batch)
            x, mask = pad_batch([ids[i] for i in batch], tokenizer.token_to_id(PAD))
            logits, _ = module(x, mask)
            return nn.functional.cross_entropy(logits, torch.tensor([labels[i] for i in batch])), len(batch)

        config = LoopConfig(max_epochs=1, max_steps=6, evaluate_every_steps=2, checkpoint_dir=str(checkpoint_dir),
                            learning_rate=1e-2)
        train(model, lambda epoch: batches, loss_fn, lambda m: {"macro_f1": 0.0}, config)
        moved = max((p.detach() - q).abs().max().item() for p, q in zip(model.parameters(), initial, strict=True))
        return model, seen, moved

    model, seen, moved = run(out / "ckpt")
    try:
        run(out / "ckpt-crashed", crash_at_call=3)
        raise SystemExit("the crashing run did not crash")
    except Crash:
        pass
    resumed, resumed_seen, _ = run(out / "ckpt-crashed")
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    (out / f"rank{rank}.json").write_text(json.dumps({
        "fingerprint": hashlib.sha256(flat.numpy().tobytes()).hexdigest(),
        "seen": seen,
        "moved": moved,
        "weights": flat.tolist(),
        "resumed_weights": torch.cat([p.detach().flatten() for p in resumed.parameters()]).tolist(),
        "resumed_seen": resumed_seen,
    }))


class Crash(RuntimeError):
    pass


if __name__ == "__main__":
    main()
