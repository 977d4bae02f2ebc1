"""The seq2seq-attention model: every score function, span (global, local-p) and cell (Elman, GRU, LSTM)
masks padding, stepping computes what the full forward pass computes, and padding never changes a
sentence's result; local-p keeps its weights inside its window."""

from __future__ import annotations

import itertools

import pytest
import torch

from training.batching import pad_batch
from training.decoding_seq2seq import greedy_decode
from training.models.layers import MASKED_SCORE
from training.models.seq2seq_attention import EncoderMemory, Seq2SeqAttention, Seq2SeqConfig, padding_bias

VOCAB = 40
PAD, BOS, EOS = 0, 2, 3
LOCAL = "local-p"
VARIANTS = [  # (attention, rnn_type, input_feeding, layers, attention_span)
    *[(attention, "gru", False, 1, "global") for attention in ("dot", "general", "concat", "additive")],
    ("general", "gru", True, 1, "global"),
    ("general", "lstm", False, 2, "global"),
    ("concat", "lstm", True, 2, "global"),
    ("general", "rnn", False, 1, "global"),
    ("dot", "rnn", True, 2, "global"),
    *[(attention, "gru", False, 1, LOCAL) for attention in ("dot", "general", "concat")],
    ("general", "lstm", True, 2, LOCAL),
    ("concat", "rnn", False, 1, LOCAL),
]
VARIANT_NAMES = ("attention", "rnn_type", "input_feeding", "layers", "span")


def tiny(attention: str = "general", rnn_type: str = "gru", input_feeding: bool = False, layers: int = 1,
         span: str = "global", seed: int = 0, window: int = 2) -> Seq2SeqAttention:
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    config = Seq2SeqConfig(vocab_size=VOCAB, embedding_dim=16, encoder_hidden=8, decoder_hidden=16, attention_dim=12,
                           encoder_layers=layers, decoder_layers=layers, rnn_type=rnn_type, attention=attention,
                           input_feeding=input_feeding, dropout=0.1, attention_span=span, local_window=window)
    return Seq2SeqAttention(config).eval()


def random_rows(lengths: list[int], generator: torch.Generator) -> list[list[int]]:
    return [torch.randint(4, VOCAB, (n,), generator=generator).tolist() for n in lengths]


def padded_batch(src_lengths: list[int], tgt_lengths: list[int], seed: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    src, src_mask = pad_batch(random_rows(src_lengths, generator), PAD)
    tgt_in, tgt_mask = pad_batch([[BOS, *row] for row in random_rows(tgt_lengths, generator)], PAD)
    return src, src_mask, tgt_in, tgt_mask


def stepped(model: Seq2SeqAttention, src: torch.Tensor, src_mask: torch.Tensor, tgt_in: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs [B, T, V] and attention weights [B, T, S] from feeding tgt_in one token at a time."""
    memory, state = model.encode(src, src_mask)
    log_probs, weights = [], []
    for t in range(tgt_in.shape[1]):
        step_log_probs, state, step_weights = model.decode_step(tgt_in[:, t], src_mask, memory, state)
        log_probs.append(step_log_probs)
        weights.append(step_weights)
    return torch.stack(log_probs, dim=1), torch.stack(weights, dim=1)


@pytest.mark.parametrize(VARIANT_NAMES, VARIANTS)
def test_stepping_reproduces_full_forward_and_masks_padding(attention: str, rnn_type: str, input_feeding: bool,
                                                            layers: int, span: str) -> None:
    model = tiny(attention, rnn_type, input_feeding, layers, span)
    src, src_mask, tgt_in, tgt_mask = padded_batch([3, 9, 1, 6], [5, 2, 8, 4], seed=layers)
    with torch.no_grad():
        full = torch.log_softmax(model(src, src_mask, tgt_in), dim=-1)
        steps, weights = stepped(model, src, src_mask, tgt_in)
    real = tgt_mask.bool()  # padded target positions are never read: only real ones must agree
    assert torch.allclose(full[real], steps[real], atol=1e-5, rtol=0)
    assert torch.equal(full[real].argmax(-1), steps[real].argmax(-1))
    assert torch.allclose(weights.sum(-1), torch.ones_like(weights[..., 0]), atol=1e-5)
    padded_source = (src_mask == 0)[:, None, :].expand_as(weights)
    assert weights[padded_source].max() < 1e-6  # exp(-1e4) underflows to 0: padding gets no attention


@pytest.mark.parametrize(VARIANT_NAMES, VARIANTS)
def test_padding_does_not_change_a_sentence(attention: str, rnn_type: str, input_feeding: bool, layers: int,
                                            span: str) -> None:
    model = tiny(attention, rnn_type, input_feeding, layers, span)
    src, src_mask, tgt_in, _ = padded_batch([4, 11, 7], [6, 6, 6], seed=3)
    with torch.no_grad():
        batched = model(src, src_mask, tgt_in)
        for row, length in enumerate([4, 11, 7]):
            alone = model(src[row : row + 1, :length], src_mask[row : row + 1, :length], tgt_in[row : row + 1])
            assert torch.allclose(batched[row], alone[0], atol=1e-5, rtol=0), f"row {row}"


@pytest.mark.parametrize("batch", [1, 4])
def test_greedy_decode_equals_greedy_by_full_recompute(batch: int) -> None:
    model = tiny("concat", seed=5)
    generator = torch.Generator().manual_seed(batch)
    src, src_mask = pad_batch(random_rows([2 + 3 * i for i in range(batch)], generator), PAD)
    max_length = 10
    decoded = greedy_decode(model, src, src_mask, max_length)
    for row in range(batch):  # the naive way: one unpadded sentence, the whole prefix re-run each step
        length = int(src_mask[row].sum())
        prefix = [BOS]
        with torch.no_grad():
            for _ in range(max_length):
                logits = model(src[row : row + 1, :length], src_mask[row : row + 1, :length], torch.tensor([prefix]))
                next_token = int(logits[0, -1].argmax())
                if next_token == EOS:
                    break
                prefix.append(next_token)
        assert decoded[row] == prefix[1:], f"row {row}"


def test_masks_are_finite_and_additive() -> None:
    bias = padding_bias(torch.tensor([[1, 1, 0], [0, 0, 0]]))  # a fully masked row too
    assert bias.shape == (2, 1, 3) and torch.isfinite(bias).all()
    assert bias.flatten().tolist() == [0, 0, MASKED_SCORE, MASKED_SCORE, MASKED_SCORE, MASKED_SCORE]


def test_fully_masked_source_gives_finite_output() -> None:
    model = tiny("general", "lstm", input_feeding=True)
    src, tgt = torch.tensor([[5, 6]]), torch.tensor([[BOS, 7]])
    with torch.no_grad():
        assert torch.isfinite(model(src, torch.zeros_like(src), tgt)).all()


def test_state_keeps_batch_on_axis_zero() -> None:
    for rnn_type, input_feeding in itertools.product(("gru", "lstm"), (False, True)):
        model = tiny(rnn_type=rnn_type, input_feeding=input_feeding, layers=2)
        src, src_mask, _, _ = padded_batch([3, 5, 2], [1, 1, 1], seed=0)
        with torch.no_grad():
            memory, state = model.encode(src, src_mask)
            _, new_state, weights = model.decode_step(torch.tensor([BOS] * 3), src_mask, memory, state)
        expected = {"hidden", *(["cell"] if rnn_type == "lstm" else []), *(["feed"] if input_feeding else [])}
        assert set(state) == set(new_state) == expected
        assert all(t.shape[0] == 3 and new_state[k].shape == t.shape for k, t in state.items())
        assert state["hidden"].shape == (3, 2, 16) and weights.shape == (3, 5)


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown attention"):
        tiny("bilinear")
    with pytest.raises(ValueError, match="unknown rnn_type"):
        tiny(rnn_type="transformer")
    with pytest.raises(ValueError, match="unknown attention_span"):
        tiny(span="local-m")
    with pytest.raises(ValueError, match="local_window must be >= 1"):
        tiny(span=LOCAL, window=0)
    with pytest.raises(ValueError, match="dot attention"):
        Seq2SeqAttention(Seq2SeqConfig(vocab_size=VOCAB, encoder_hidden=8, decoder_hidden=32, attention="dot"))


@pytest.mark.parametrize("attention", ["dot", "general", "concat"])
def test_local_p_weights_stay_inside_the_window_and_off_padding(attention: str) -> None:
    """Luong's local-p: weight only on real positions s with |s - p_t| <= D, summing to one there."""
    window = 2
    model = tiny(attention, span=LOCAL, window=window, seed=7)
    src, src_mask, _, _ = padded_batch([12, 3, 9, 1], [1, 1, 1, 1], seed=11)
    attention_module = model.decoder.attention
    assert attention_module.window is not None
    queries = torch.randn(4, 6, 16, generator=torch.Generator().manual_seed(1)) * 3  # spread p_t over the rows
    with torch.no_grad():
        memory, _ = model.encode(src, src_mask)
        _, weights = attention_module(queries, memory, src_mask)
        centres = attention_module.window.centres(queries, src_mask)  # [B, T, 1]
    lengths = src_mask.sum(1)[:, None, None]
    assert bool(((centres >= 0) & (centres <= lengths)).all())
    positions = torch.arange(src.shape[1])[None, None, :]
    inside = ((positions - centres).abs() <= window) & src_mask.bool()[:, None, :]
    assert weights[~inside].max() == 0  # exp(-1e4) underflows: not merely small
    assert torch.allclose((weights * inside).sum(-1), torch.ones(4, 6), atol=1e-6)
    assert int(inside.sum(-1).min()) >= 1  # p_t <= S and D >= 1: a real token is always in the window
    # The window is really narrower than the long rows (the test would pass trivially otherwise).
    assert bool((inside[0].sum(-1) < 12).all())


def test_local_p_prefers_positions_near_the_predicted_one() -> None:
    """With equal scores (dot attention on identical encoder states) only the Gaussian shapes the weights:
    they fall with the distance from p_t, as exp(-(s - p_t)^2 / (2 sigma^2)), sigma = D / 2."""
    window = 4
    model = tiny("general", span=LOCAL, window=window, seed=3)
    attention_module = model.decoder.attention
    assert attention_module.window is not None
    mask = torch.ones(1, 10, dtype=torch.long)
    states = torch.ones(1, 10, 16)
    memory = EncoderMemory(states, attention_module.keys(states))
    queries = torch.randn(1, 5, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _, weights = attention_module(queries, memory, mask)
        centres = attention_module.window.centres(queries, mask)
    distance = torch.arange(10)[None, None, :] - centres
    gaussian = torch.exp(-(distance**2) / (2 * (window / 2) ** 2)) * (distance.abs() <= window)
    assert torch.allclose(weights, gaussian / gaussian.sum(-1, keepdim=True), atol=1e-6)


def test_the_elman_cell_trains() -> None:
    """rnn_type "rnn": a plain tanh RNN encoder and decoder learn a tiny batch by heart."""
    model = tiny("general", rnn_type="rnn", span=LOCAL, seed=4).train()
    assert isinstance(model.decoder.rnn, torch.nn.RNN) and model.decoder.rnn.nonlinearity == "tanh"
    src, src_mask, tgt_in, tgt_mask = padded_batch([5, 7, 3, 6], [4, 6, 5, 3], seed=9)
    targets = torch.cat([tgt_in[:, 1:], torch.full((4, 1), PAD)], dim=1).masked_fill(tgt_mask == 0, PAD)
    criterion = torch.nn.CrossEntropyLoss(ignore_index=PAD)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        optimiser.zero_grad()
        loss = criterion(model(src, src_mask, tgt_in).reshape(-1, VOCAB), targets.reshape(-1))
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses[::10]
