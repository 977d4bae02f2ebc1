"""Every tensor a model makes inside forward or a loss is made on its inputs' device (issue #17: bilstm_crf.py,
crf.py and sasrec.py made random and index tensors on the CPU, which fails on CUDA).

There is no GPU here, so the check turns it round: the model and its inputs stay on the CPU while the
default device is `meta`. A tensor made without `device=` then lands on meta, and mixing it with the
CPU tensors either raises or gives meta/garbage results; a tensor made with `device=<input>.device` is a
normal CPU tensor, and the call returns exactly what it returns outside the context.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from training.models.bilstm_crf import BiLSTMCRF, BiLSTMCRFConfig
from training.models.cooccurrence import CooccurrenceScores
from training.models.sasrec import SASRec, SASRecConfig, SASRecForExport, replace_items
from training.models.sentiment_classifier import BiGRUAttentionClassifier, SentimentModelConfig
from training.models.seq2seq_attention import Seq2SeqAttention, Seq2SeqConfig
from training.models.transformer import Transformer, TransformerConfig

torch.set_num_threads(1)
VOCAB = 50


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and their 0/1 mask [3, 7] (lengths 7, 5, 3)."""
    generator = torch.Generator().manual_seed(0)
    mask = (torch.arange(7)[None, :] < torch.tensor([[7], [5], [3]])).long()
    return torch.randint(1, VOCAB, (3, 7), generator=generator) * mask, mask


def flat(outputs: object) -> list[torch.Tensor]:
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, dict):
        return [t for value in outputs.values() for t in flat(value)]
    return [t for value in outputs for t in flat(value)]  # type: ignore[attr-defined]


def assert_device_independent(call: Callable[[], object]) -> None:
    """call() (seeded inside) gives the same CPU tensors with `meta` as the default device as without."""
    torch.manual_seed(1)
    expected = flat(call())
    torch.manual_seed(1)
    with torch.device("meta"):
        got = flat(call())
    assert [t.device.type for t in got] == ["cpu"] * len(got)
    for want, have in zip(expected, got, strict=True):
        torch.testing.assert_close(have, want, rtol=0, atol=0)


def ner_model() -> BiLSTMCRF:
    torch.manual_seed(0)
    return BiLSTMCRF(BiLSTMCRFConfig(vocab_size=VOCAB, char_vocab_size=20, shape_vocab_size=5, num_tags=4, word_dim=8,
                                     char_dim=4, char_filters=6, shape_dim=3, hidden_dim=8, word_dropout=0.3))


def test_bilstm_crf_training_loss_makes_its_word_dropout_and_crf_indices_on_the_inputs_device() -> None:
    model, (ids, mask) = ner_model().train(), batch()
    inputs = {"word_ids": ids, "char_ids": torch.randint(0, 20, (3, 7, 5)) * mask[:, :, None],
              "shape_ids": torch.randint(1, 5, (3, 7)) * mask, "mask": mask}
    tags = torch.randint(0, 4, (3, 7)) * mask
    assert_device_independent(lambda: model.loss(inputs, tags))


def sasrec(item_features: int = 0) -> SASRec:
    torch.manual_seed(0)
    return SASRec(SASRecConfig(num_items=VOCAB, max_length=7, hidden_dim=8, num_blocks=2, num_heads=2,
                               positions="from_end", item_features=item_features))


@pytest.mark.parametrize("loss", ["ce", "ce+bce", "ssm"])
def test_sasrec_loss_draws_negatives_and_noise_on_the_inputs_device(loss: str) -> None:
    model, (ids, mask) = sasrec().train(), batch()
    targets = torch.roll(ids, -1, dims=1) * mask
    assert_device_independent(lambda: model.next_item_loss(ids, targets, loss=loss, negatives=4, item_noise=0.3)[0])


def test_sasrec_export_graph_with_cooccurrence_term_indexes_on_the_inputs_device() -> None:
    model, (ids, mask) = sasrec(item_features=3).eval(), batch()
    rng = np.random.default_rng(0)
    term = CooccurrenceScores(rng.normal(size=(VOCAB + 1, 4)).astype(np.float32),
                              rng.normal(size=(4, VOCAB)).astype(np.float32), weight=2.0)
    exported = SASRecForExport(model, term)
    assert_device_independent(lambda: exported(ids, mask.sum(dim=1), ids))
    assert_device_independent(lambda: replace_items(ids, 0.5, VOCAB))


def test_sentiment_classifier_trains_on_the_inputs_device() -> None:
    torch.manual_seed(0)
    model = BiGRUAttentionClassifier(SentimentModelConfig(vocab_size=VOCAB, embedding_dim=8, hidden_dim=8,
                                                          attention_dim=8, score_head=True)).train()
    ids, mask = batch()
    assert_device_independent(lambda: model(ids, mask, head="score"))


@pytest.mark.parametrize(("rnn_type", "span"), [("gru", "global"), ("lstm", "global"), ("rnn", "local-p"),
                                                ("gru", "local-p")])
def test_seq2seq_forward_and_decode_step_stay_on_the_inputs_device(rnn_type: str, span: str) -> None:
    torch.manual_seed(0)
    model = Seq2SeqAttention(Seq2SeqConfig(vocab_size=VOCAB, embedding_dim=8, encoder_hidden=4, decoder_hidden=8,
                                           encoder_layers=2, rnn_type=rnn_type, attention="concat",
                                           attention_dim=5, input_feeding=True, attention_span=span,
                                           local_window=2)).train()
    ids, mask = batch()
    assert_device_independent(lambda: model(ids, mask, ids, mask))

    def step() -> object:
        memory, state = model.encode(ids, mask)
        return model.decode_step(ids[:, 0], mask, memory, state)

    assert_device_independent(step)


def test_transformer_forward_and_cached_steps_stay_on_the_inputs_device() -> None:
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(vocab_size=VOCAB, d_model=8, num_heads=2, d_ff=16, encoder_layers=1,
                                          decoder_layers=2)).train()
    ids, mask = batch()
    assert_device_independent(lambda: model(ids, mask, ids, mask))

    def two_steps() -> object:
        cross = model.cross_attention_cache(model.encode(ids, mask))
        _, present, _ = model.decode_step(ids[:, :1], cross, mask, model.empty_cache(3))
        return model.decode_step(ids[:, 1:2], cross, mask, present)

    assert_device_independent(two_steps)


def test_the_check_catches_a_tensor_made_without_device() -> None:
    """The context really moves device-less factories to meta: a forward that makes one fails the check."""

    class MakesItsOwnNoise(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.rand(x.shape)

    model, (ids, _) = MakesItsOwnNoise(), batch()
    with pytest.raises((RuntimeError, AssertionError)):
        assert_device_independent(lambda: model(ids.float()))
