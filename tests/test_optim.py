"""Weight decay groups (training/optim.py): matrices decay; biases, norms and embeddings do not (issue #17)."""

from __future__ import annotations

import pathlib

import torch
from torch import nn

from training.loop import LoopConfig, train
from training.models.bilstm_crf import BiLSTMCRF, BiLSTMCRFConfig
from training.models.sentiment_classifier import BiGRUAttentionClassifier, SentimentModelConfig
from training.models.transformer import Transformer, TransformerConfig
from training.optim import decay_groups

torch.set_num_threads(1)


def grouped_names(model: nn.Module) -> tuple[set[str], set[str]]:
    decay, no_decay = decay_groups(model, 0.1)
    names = {id(p): name for name, p in model.named_parameters()}
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    return {names[id(p)] for p in decay["params"]}, {names[id(p)] for p in no_decay["params"]}


def assert_partition(model: nn.Module, decay: set[str], no_decay: set[str]) -> None:
    assert not decay & no_decay
    assert decay | no_decay == {name for name, _ in model.named_parameters()}


def test_transformer_decays_attention_and_ffn_matrices_only() -> None:
    model = Transformer(TransformerConfig(vocab_size=30, d_model=8, num_heads=2, d_ff=16, encoder_layers=1,
                                          decoder_layers=1))
    decay, no_decay = grouped_names(model)
    assert_partition(model, decay, no_decay)
    # The embedding is also the output projection (tied): still an embedding, not decayed.
    assert "embedding.weight" in no_decay
    assert {"encoder_layers.0.self_attention_norm.weight", "encoder_layers.0.self_attention_norm.bias",
            "decoder_norm.weight", "encoder_layers.0.self_attention.query.bias"} <= no_decay
    assert {"encoder_layers.0.self_attention.query.weight", "decoder_layers.0.cross_attention.value.weight",
            "decoder_layers.0.feed_forward.expand.weight"} <= decay
    assert all(name.endswith("weight") for name in decay)


def test_recurrent_and_convolutional_matrices_decay_their_biases_and_embeddings_do_not() -> None:
    sentiment = BiGRUAttentionClassifier(SentimentModelConfig(vocab_size=30, embedding_dim=8, hidden_dim=8,
                                                              attention_dim=8))
    decay, no_decay = grouped_names(sentiment)
    assert_partition(sentiment, decay, no_decay)
    assert {f"{direction}_gru.weight_{kind}_l0" for direction in ("forward", "backward") for kind in ("ih", "hh")} | {
        "attention.project.weight", "attention.score.weight", "classifier.weight"} == decay
    assert {"embedding.weight", "forward_gru.bias_ih_l0", "classifier.bias"} <= no_decay

    ner = BiLSTMCRF(BiLSTMCRFConfig(vocab_size=30, char_vocab_size=10, shape_vocab_size=4, num_tags=3, word_dim=4,
                                    char_dim=3, char_filters=4, shape_dim=2, hidden_dim=4))
    decay, no_decay = grouped_names(ner)
    assert_partition(ner, decay, no_decay)
    assert {"chars.conv.weight", "forward_lstm.weight_ih_l0", "emit.weight"} <= decay  # conv weight is 3-D
    assert {"word_embedding.weight", "chars.embedding.weight", "shape_embedding.weight", "chars.conv.bias",
            "crf.start", "crf.end"} <= no_decay


def test_a_linear_tied_to_an_embedding_is_listed_once_without_decay() -> None:
    embedding = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = embedding.weight
    model = nn.Sequential(embedding, nn.LayerNorm(4), head)
    decay, no_decay = decay_groups(model, 0.5)
    assert decay["params"] == []
    assert [p.shape for p in no_decay["params"]] == [(10, 4), (4,), (4,)]


def test_adamw_with_the_groups_shrinks_matrices_and_leaves_the_rest() -> None:
    """One AdamW step with zero gradients moves nothing but the decay: only matrices shrink."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4), nn.LayerNorm(4))
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW(decay_groups(model, 0.5), lr=0.1)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    after = list(model.parameters())
    torch.testing.assert_close(after[0], before[0], rtol=0, atol=0)  # embedding
    torch.testing.assert_close(after[1], before[1] * (1 - 0.1 * 0.5), rtol=1e-6, atol=1e-7)  # Linear weight
    for index in (2, 3, 4):  # Linear bias, LayerNorm weight and bias
        torch.testing.assert_close(after[index], before[index], rtol=0, atol=0)


def test_the_training_loop_does_not_decay_embedding_rows_no_batch_uses(tmp_path: pathlib.Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(6, 4), nn.Linear(4, 1))
    unused_row = model[0].weight[5].detach().clone()  # ids 0..4 only below
    ids, targets = torch.tensor([[0, 1], [2, 3], [4, 0]]), torch.tensor([[1.0], [0.0], [1.0]])

    def loss_fn(module: nn.Module, batch: list[int]) -> tuple[torch.Tensor, int]:
        predicted = module(ids[batch]).mean(dim=1)
        return nn.functional.mse_loss(predicted, targets[batch]), len(batch)

    config = LoopConfig(max_epochs=1, max_steps=3, learning_rate=0.1, weight_decay=0.5, patience=5,
                        checkpoint_dir=str(tmp_path / "run"), threads=1)
    train(model, lambda epoch: [[0], [1], [2]], loss_fn, lambda module: {"macro_f1": 0.0}, config)
    torch.testing.assert_close(model[0].weight[5].detach(), unused_row, rtol=0, atol=0)


def test_an_optimizer_state_saved_before_decay_groups_resumes_with_each_parameters_moments() -> None:
    from training.loop import _in_decay_groups

    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(6, 4), nn.Linear(4, 3), nn.LayerNorm(3))
    old = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.5)  # the one group of old checkpoints
    model(torch.tensor([[1, 2]])).sum().backward()
    old.step()
    new = torch.optim.AdamW(decay_groups(model, 0.5), lr=0.1)
    new.load_state_dict(_in_decay_groups(old.state_dict(), model, new))
    for parameter in model.parameters():
        torch.testing.assert_close(new.state[parameter]["exp_avg"], old.state[parameter]["exp_avg"], rtol=0, atol=0)
    assert [g["weight_decay"] for g in new.param_groups] == [0.5, 0.0]
