"""The Transformer: cached step decoding computes what the full forward pass computes, masks stay finite."""

from __future__ import annotations

import itertools
import math
import pathlib

import pytest
import torch

from training.batching import pad_batch
from training.decoding import greedy_decode
from training.loop import LoopConfig, train
from training.models.transformer import (
    MASKED_SCORE,
    Transformer,
    TransformerConfig,
    causal_bias,
    padding_bias,
)

VOCAB = 50
PAD, BOS, EOS = 0, 2, 3


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    tiny = TransformerConfig(vocab_size=VOCAB, d_model=32, num_heads=4, d_ff=64, encoder_layers=2,
                             decoder_layers=2, dropout=0.1, max_positions=128)
    return Transformer(tiny).eval()


def random_rows(lengths: list[int], generator: torch.Generator) -> list[list[int]]:
    return [torch.randint(4, VOCAB, (n,), generator=generator).tolist() for n in lengths]


def step_logits(model: Transformer, src: torch.Tensor, src_mask: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
    """Logits [B, T, V] from feeding tgt_in one position at a time through the cache."""
    cross = model.cross_attention_cache(model.encode(src, src_mask))
    past = model.empty_cache(src.shape[0])
    steps = []
    for t in range(tgt_in.shape[1]):
        logits, past, _ = model.decode_step(tgt_in[:, t : t + 1], cross, src_mask, past)
        steps.append(logits)
    assert past[0][0].shape[2] == tgt_in.shape[1]  # the cache grew one position per step
    return torch.stack(steps, dim=1)


@pytest.mark.parametrize(("src_lengths", "tgt_lengths"), [
    ([5], [7]),
    ([3, 9], [8, 2]),
    ([1, 12, 6, 4], [5, 5, 11, 1]),
    ([20, 2, 7, 15, 9, 3, 11], [3, 18, 6, 9, 14, 2, 7]),
])
def test_cached_steps_reproduce_full_forward_with_padding(model: Transformer, src_lengths: list[int],
                                                          tgt_lengths: list[int]) -> None:
    generator = torch.Generator().manual_seed(len(src_lengths))
    src, src_mask = pad_batch(random_rows(src_lengths, generator), PAD)
    tgt_in, tgt_mask = pad_batch([[BOS, *row] for row in random_rows(tgt_lengths, generator)], PAD)
    with torch.no_grad():
        full = model(src, src_mask, tgt_in, tgt_mask)
        stepped = step_logits(model, src, src_mask, tgt_in)
    real = tgt_mask.bool()  # padded target positions are never read: only real ones must agree
    assert torch.allclose(full[real], stepped[real], atol=1e-5, rtol=0)
    assert torch.equal(full[real].argmax(-1), stepped[real].argmax(-1))


@pytest.mark.parametrize("batch", [1, 3, 6])
def test_greedy_with_cache_equals_greedy_by_full_recompute(model: Transformer, batch: int) -> None:
    generator = torch.Generator().manual_seed(100 + batch)
    src, src_mask = pad_batch(random_rows([2 + 3 * i for i in range(batch)], generator), PAD)
    max_length = 12
    cached = greedy_decode(model, src, src_mask, max_length)
    for row in range(batch):  # the naive way: one unpadded sentence, the whole prefix recomputed each step
        length = int(src_mask[row].sum())
        one_src, one_mask = src[row : row + 1, :length], src_mask[row : row + 1, :length]
        prefix = [BOS]
        with torch.no_grad():
            for _ in range(max_length):
                tgt = torch.tensor([prefix])
                next_token = int(model(one_src, one_mask, tgt, torch.ones_like(tgt))[0, -1].argmax())
                if next_token == EOS:
                    break
                prefix.append(next_token)
        assert cached[row] == prefix[1:], f"row {row}"


def test_padding_does_not_change_a_sentence(model: Transformer) -> None:
    generator = torch.Generator().manual_seed(7)
    rows = random_rows([4, 13], generator)
    src, src_mask = pad_batch(rows, PAD)
    tgt = torch.tensor([[BOS, 5, 6, 7]] * 2)
    with torch.no_grad():
        batched = model(src, src_mask, tgt, torch.ones_like(tgt))
        alone = model(src[:1, :4], src_mask[:1, :4], tgt[:1], torch.ones_like(tgt[:1]))
    assert torch.allclose(batched[0], alone[0], atol=1e-5, rtol=0)


def test_masks_are_finite_and_additive() -> None:
    bias = padding_bias(torch.tensor([[1, 1, 0], [0, 0, 0]]))  # a fully masked row too
    assert bias.shape == (2, 1, 1, 3) and torch.isfinite(bias).all()
    assert bias.flatten().tolist() == [0, 0, MASKED_SCORE, MASKED_SCORE, MASKED_SCORE, MASKED_SCORE]
    causal = causal_bias(4)
    assert torch.isfinite(causal).all() and causal.dtype == torch.float32
    assert causal[0, 0].tolist()[1] == [0, 0, MASKED_SCORE, MASKED_SCORE]


def test_fully_masked_source_gives_finite_logits(model: Transformer) -> None:
    src, tgt = torch.tensor([[5, 6]]), torch.tensor([[BOS, 7]])
    with torch.no_grad():
        logits = model(src, torch.zeros_like(src), tgt, torch.ones_like(tgt))
    assert torch.isfinite(logits).all()


def test_output_projection_is_the_shared_embedding(model: Transformer) -> None:
    names = [name for name, _ in model.named_parameters()]
    assert sum("embedding" in name for name in names) == 1
    assert sum(p.numel() for p in model.parameters()) < 60_000


def learning_rates_seen(schedule: str | None, checkpoint_dir: pathlib.Path) -> list[float]:
    """The loop's lr per step, read off the updates: with a constant gradient, Adam moves a weight by
    exactly lr each step (m / sqrt(v) = 1)."""
    weight = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(weight.weight)
    values = []

    def loss_fn(module: torch.nn.Module, batch: int) -> tuple[torch.Tensor, int]:
        values.append(float(module.weight.detach()))
        return module.weight.sum(), 1

    extra = {} if schedule is None else {"lr_schedule": schedule}
    config = LoopConfig(max_epochs=1, learning_rate=0.1, warmup_steps=4, grad_clip=0.0, metric="score",
                        checkpoint_dir=str(checkpoint_dir), **extra)
    train(weight, lambda epoch: list(range(10)), loss_fn, lambda module: {"score": 0.0}, config)
    return [before - after for before, after in itertools.pairwise(values)]


def test_loop_lr_schedules(tmp_path: pathlib.Path) -> None:
    warmup = [0.025, 0.05, 0.075, 0.1]
    default = learning_rates_seen(None, tmp_path / "default")  # the sentiment model's behaviour, unchanged
    assert default == pytest.approx(warmup + [0.1] * 5, rel=1e-5)
    inverse_sqrt = learning_rates_seen("inverse_sqrt", tmp_path / "inverse_sqrt")
    assert inverse_sqrt == pytest.approx(warmup + [0.1 * math.sqrt(4 / s) for s in range(5, 10)], rel=1e-5)
    # 10 planned steps: after the warmup the rate falls linearly and would reach 0 at step 10.
    linear = learning_rates_seen("warmup_linear", tmp_path / "warmup_linear")
    assert linear == pytest.approx(warmup + [0.1 * (10 - s) / 6 for s in range(4, 9)], rel=1e-5)
