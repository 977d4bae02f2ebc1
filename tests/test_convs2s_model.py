"""The ConvS2S model: stepping with the (kernel - 1)-input cache computes what the full forward pass
computes, padding never changes a sentence's result, attention ignores padded source positions, and a
few optimiser steps lower the loss on a tiny batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.batching import pad_batch
from training.decoding_seq2seq import greedy_decode
from training.models.convs2s import ConvS2S, ConvS2SConfig

VOCAB = 40
PAD, BOS, EOS = 0, 2, 3


def tiny(kernels: tuple[int, int] = (3, 3), seed: int = 0) -> ConvS2S:
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    config = ConvS2SConfig(vocab_size=VOCAB, embedding_dim=16, channels=12, encoder_layers=2,
                           encoder_kernel=kernels[0], decoder_layers=3, decoder_kernel=kernels[1], dropout=0.1,
                           max_positions=32)
    return ConvS2S(config).eval()


def random_rows(lengths: list[int], generator: torch.Generator) -> list[list[int]]:
    return [torch.randint(4, VOCAB, (n,), generator=generator).tolist() for n in lengths]


def padded_batch(src_lengths: list[int], tgt_lengths: list[int], seed: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    src, src_mask = pad_batch(random_rows(src_lengths, generator), PAD)
    tgt_in, tgt_mask = pad_batch([[BOS, *row] for row in random_rows(tgt_lengths, generator)], PAD)
    return src, src_mask, tgt_in, tgt_mask


def stepped(model: ConvS2S, src: torch.Tensor, src_mask: torch.Tensor, tgt_in: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs [B, T, V] and attention weights [B, T, S] from feeding tgt_in one token at a time."""
    memory, state = model.encode(src, src_mask)
    log_probs, weights = [], []
    for t in range(tgt_in.shape[1]):
        step_log_probs, state, step_weights = model.decode_step(tgt_in[:, t], src_mask, memory, state)
        log_probs.append(step_log_probs)
        weights.append(step_weights)
    return torch.stack(log_probs, dim=1), torch.stack(weights, dim=1)


@pytest.mark.parametrize("kernels", [(3, 3), (5, 2), (1, 4)])
def test_stepping_reproduces_full_forward_and_masks_padding(kernels: tuple[int, int]) -> None:
    model = tiny(kernels)
    src, src_mask, tgt_in, tgt_mask = padded_batch([3, 9, 1, 6], [5, 2, 8, 4], seed=kernels[1])
    with torch.no_grad():
        full = torch.log_softmax(model(src, src_mask, tgt_in), dim=-1)
        steps, weights = stepped(model, src, src_mask, tgt_in)
    real = tgt_mask.bool()  # padded target positions are never read: only real ones must agree
    assert torch.allclose(full[real], steps[real], atol=1e-5, rtol=0)
    assert torch.equal(full[real].argmax(-1), steps[real].argmax(-1))
    assert torch.allclose(weights.sum(-1), torch.ones_like(weights[..., 0]), atol=1e-5)
    padded_source = (src_mask == 0)[:, None, :].expand_as(weights)
    assert weights[padded_source].max() < 1e-6  # exp(-1e4) underflows to 0: padding gets no attention


def test_the_cache_holds_each_layers_last_kernel_minus_one_inputs() -> None:
    model = tiny((3, 4))
    src, src_mask, tgt_in, _ = padded_batch([5, 2], [6, 6], seed=1)
    with torch.no_grad():
        memory, state = model.encode(src, src_mask)
        assert set(state) == {"position", "conv_0", "conv_1", "conv_2"}
        assert all(state[f"conv_{i}"].shape == (2, 3, 12) for i in range(3))
        assert not any(state[f"conv_{i}"].any() for i in range(3))  # the causal left padding
        for t in range(4):
            _, state, _ = model.decode_step(tgt_in[:, t], src_mask, memory, state)
    assert state["position"].tolist() == [[4.0], [4.0]]
    assert state["conv_0"].shape == (2, 3, 12)


def test_padding_does_not_change_a_sentence() -> None:
    model = tiny()
    src, src_mask, tgt_in, _ = padded_batch([4, 11, 7], [6, 6, 6], seed=3)
    with torch.no_grad():
        batched = torch.log_softmax(model(src, src_mask, tgt_in), dim=-1)
        decoded = greedy_decode(model, src, src_mask, max_length=6)
        for row in range(3):
            length = int(src_mask[row].sum())
            alone = torch.log_softmax(model(src[row : row + 1, :length], src_mask[row : row + 1, :length],
                                            tgt_in[row : row + 1]), dim=-1)
            assert torch.allclose(batched[row], alone[0], atol=1e-5, rtol=0)
            assert greedy_decode(model, src[row : row + 1, :length], src_mask[row : row + 1, :length],
                                 max_length=6) == decoded[row : row + 1]


def test_a_few_steps_lower_the_loss_on_a_tiny_batch() -> None:
    model = tiny().train()
    src, src_mask, tgt, tgt_mask = padded_batch([5, 7, 4, 6], [6, 5, 7, 4], seed=5)
    criterion = nn.CrossEntropyLoss(ignore_index=PAD)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss() -> torch.Tensor:
        logits = model(src, src_mask, tgt[:, :-1], tgt_mask[:, :-1])
        return criterion(logits.reshape(-1, VOCAB), tgt[:, 1:].reshape(-1))

    torch.manual_seed(0)
    first = loss()
    for _ in range(60):
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
    assert loss().item() < 0.5 * first.item()


def test_the_encoder_gradient_is_scaled_by_one_over_twice_the_decoder_layers() -> None:
    model = tiny().train()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0  # train mode for the gradient scaling only
    _, src_mask, _, _ = padded_batch([5], [1], seed=2)
    e = torch.randn(1, 5, 16, requires_grad=True)
    model.encoder(e, src_mask).keys.sum().backward()
    scaled = e.grad.clone()
    e.grad = None
    model.encoder.eval()
    model.encoder(e, src_mask).keys.sum().backward()
    assert torch.allclose(scaled, e.grad / 6.0, atol=1e-7)
