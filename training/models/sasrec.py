"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018).

    item history -> item embedding * sqrt(d) + learned position embedding -> dropout
    -> N x [x + Dropout(CausalSelfAttention(LN(x))); x + Dropout(FFN(LN(x)))] -> LN
    -> score of every item = <state, item embedding>  (the input embeddings are shared, as in the paper)

Histories are RIGHT-padded with item 0. Under the causal mask a real position only attends to itself
and earlier positions, which are all real, so no padding mask is needed at all; pad positions compute
garbage nobody reads. Positions count from the first item of the (truncated) history, so a history of
length L looks the same to the model at serving time as the first L steps of a training sequence.

Training (Klenitskiy & Vasilev 2023, "Turning Dross Into Gold Loss: is BERT4Rec really better than
SASRec?"): full softmax cross-entropy over the whole catalogue at every position, instead of the
paper's binary cross-entropy against one sampled negative; with 3,706 items it is cheap.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn


@dataclass(frozen=True)
class SASRecConfig:
    num_items: int  # item ids 1..num_items; 0 is padding
    max_length: int = 200
    hidden_dim: int = 64
    num_blocks: int = 2
    num_heads: int = 1
    dropout: float = 0.2
    # "from_start": position t is the t-th item of the (truncated) history; "from_end": the distance
    # from the history's last item (the recency view of the paper's left-padded window). Experiment.
    positions: str = "from_start"
    # Item side features (genre indicators, release era: training/data/movielens.py item_features): each
    # item's vector is its id embedding plus a learned projection of its features, so items with few
    # interactions borrow from the others of their genre and era. 0 = ids only (versions 1-3). Export
    # folds the projection into one embedding table (fold_item_features): the graph does not change.
    item_features: int = 0


class CausalSelfAttention(nn.Module):
    def __init__(self, hidden_dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_dim // num_heads
        self.qkv = nn.Linear(hidden_dim, 3 * hidden_dim)
        self.out = nn.Linear(hidden_dim, hidden_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, causal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, d], causal [T, T] bool (True = may attend) -> (output [B, T, d], weights [B, H, T, T])."""
        batch, length, _ = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        weights = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        mixed = (self.dropout(weights) @ v).transpose(1, 2).reshape(batch, length, -1)
        return self.out(mixed), weights


class Block(nn.Module):
    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        d = config.hidden_dim
        self.attention_norm = nn.LayerNorm(d)
        self.attention = CausalSelfAttention(d, config.num_heads, config.dropout)
        self.ffn_norm = nn.LayerNorm(d)
        # The paper's point-wise feed-forward network: two d x d layers with a ReLU.
        self.ffn = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(d, d))
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, causal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attended, weights = self.attention(self.attention_norm(x), causal)
        x = x + self.dropout(attended)
        x = x + self.dropout(self.ffn(self.ffn_norm(x)))
        return x, weights


class SASRec(nn.Module):
    feature_table: torch.Tensor  # a buffer, registered in __init__ with item_features (declared for the type checker)

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.config = config
        self.item_embedding = nn.Embedding(config.num_items + 1, config.hidden_dim, padding_idx=0)
        self.position_embedding = nn.Embedding(config.max_length, config.hidden_dim)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_blocks))
        self.final_norm = nn.LayerNorm(config.hidden_dim)
        # Xavier-normal weights as in the reference implementations: nn.Embedding's N(0, 1) times
        # sqrt(d) = 8 would start with huge item scores and a saturated softmax.
        for name, parameter in self.named_parameters():
            if parameter.dim() > 1:
                nn.init.xavier_normal_(parameter)
            elif name.endswith("bias"):
                nn.init.zeros_(parameter)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        if config.item_features:
            # Filled from the catalogue by the trainer; a buffer, so it travels in the checkpoint.
            self.register_buffer("feature_table", torch.zeros(config.num_items + 1, config.item_features))
            # Starts at 0: a model given features starts as its ids-only self (e.g. a final phase from one).
            self.feature_projection = nn.Linear(config.item_features, config.hidden_dim, bias=False)
            nn.init.zeros_(self.feature_projection.weight)

    def item_table(self) -> torch.Tensor:
        """[num_items + 1, d]: every item's vector, the id embedding plus its projected features."""
        if not self.config.item_features:
            return self.item_embedding.weight
        return self.item_embedding.weight + self.feature_projection(self.feature_table)

    def embed_items(self, ids: torch.Tensor) -> torch.Tensor:
        if not self.config.item_features:
            return self.item_embedding(ids)
        return nn.functional.embedding(ids, self.item_table())

    def encode(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """history [B, T] right-padded ids -> (states [B, T, d], last block's weights [B, H, T, T])."""
        length = history.shape[1]
        positions = torch.arange(length, device=history.device)
        if self.config.positions == "from_end":
            lengths = (history > 0).sum(dim=1, keepdim=True)
            positions = (lengths - 1 - positions[None, :]).clamp(min=0)
        x = self.embed_items(history) * math.sqrt(self.config.hidden_dim) + self.position_embedding(positions)
        x = self.embedding_dropout(x)
        causal = torch.ones(length, length, dtype=torch.bool, device=history.device).tril()
        weights = torch.empty(0, device=history.device)
        for block in self.blocks:
            x, weights = block(x, causal)
        return self.final_norm(x), weights

    def item_scores(self, states: torch.Tensor) -> torch.Tensor:
        """states [..., d] -> scores [..., num_items]; column j is item id j + 1."""
        return states @ self.item_table()[1:].T

    def next_item_loss(self, inputs: torch.Tensor, targets: torch.Tensor, loss: str = "ce",
                       negatives: int = 1, item_noise: float = 0.0) -> tuple[torch.Tensor, int]:
        """Mean loss of predicting targets[b, t] (0 = padding, skipped) from inputs[b, :t+1].

        Terms joined by "+", summed:
        "ce": softmax cross-entropy over the whole catalogue (what the served top-k ranks by).
        "bce": the paper's binary cross-entropy of the target against `negatives` uniformly drawn items
        per position (mean over all positive and negative logits; a draw equal to the target is rare
        among thousands of items and left in).
        "ssm": softmax cross-entropy of the target against `negatives` uniformly drawn items (draws equal
        to the target masked out): the sampled evaluation protocol's own question, "is the target above
        these random movies?", which the full softmax barely asks once the target beats the popular ones.

        `item_noise`: each history item is replaced by a uniformly drawn one with this probability before
        encoding (stochastic shared embeddings, Wu et al. 2019; SSE-PT used 0.1 on ML-1M); targets stay."""
        if item_noise > 0:
            inputs = replace_items(inputs, item_noise, self.config.num_items)
        states, _ = self.encode(inputs)
        real = targets > 0
        states, positives = states[real], targets[real]  # only real positions: half the rows of a padded batch
        parts = loss.split("+")
        unknown = set(parts) - {"ce", "bce", "ssm"}
        if unknown:
            raise ValueError(f"unknown loss terms {sorted(unknown)}")
        total = torch.zeros((), device=states.device)
        if "ce" in parts:
            total = total + nn.functional.cross_entropy(self.item_scores(states), positives - 1)
        if "bce" in parts or "ssm" in parts:
            drawn = torch.randint(1, self.config.num_items + 1, (positives.shape[0], negatives), device=states.device)
            positive_logits = (states * self.embed_items(positives)).sum(-1)  # [N]
            negative_logits = torch.einsum("nd,nkd->nk", states, self.embed_items(drawn))  # [N, K]
        if "bce" in parts:
            logits = torch.cat([positive_logits, negative_logits.flatten()])
            labels = torch.cat([torch.ones_like(positive_logits), torch.zeros_like(negative_logits.flatten())])
            total = total + nn.functional.binary_cross_entropy_with_logits(logits, labels)
        if "ssm" in parts:
            negative_logits = negative_logits.masked_fill(drawn == positives[:, None], float("-inf"))
            logits = torch.cat([positive_logits[:, None], negative_logits], dim=1)
            total = total + nn.functional.cross_entropy(logits, torch.zeros_like(positives))
        return total, int(real.sum())


def replace_items(history: torch.Tensor, probability: float, num_items: int) -> torch.Tensor:
    """A copy of history [B, T] in which each real item (not padding 0) is, with `probability`, swapped
    for an item drawn uniformly from 1..num_items: SSE's regulariser, the input-side analogue of dropout
    for an embedding table whose rows are also the output layer."""
    swap = (history > 0) & (torch.rand(history.shape, device=history.device) < probability)
    return torch.where(swap, torch.randint(1, num_items + 1, history.shape, device=history.device), history)


def fold_item_features(model: SASRec) -> SASRec:
    """The same function as an ids-only SASRec: the item table (id embedding + projected features) becomes
    the embedding, so the exported graph has the shape of every other version's."""
    if not model.config.item_features:
        return model
    folded = SASRec(dataclasses.replace(model.config, item_features=0))
    state = {k: v for k, v in model.state_dict().items() if k not in ("feature_table", "feature_projection.weight")}
    with torch.no_grad():
        state["item_embedding.weight"] = model.item_table().detach().clone()
    folded.load_state_dict(state)
    return folded.train(model.training)


def next_item(model: SASRec, history: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores [B, num_items] of the next item after each history, the last block's attention of the
    history's last position over the history [B, T], mean over heads, 0 on padding)."""
    states, weights = model.encode(history)
    rows = torch.arange(history.shape[0], device=history.device)
    last = lengths - 1
    return model.item_scores(states[rows, last]), weights[rows, :, last].mean(dim=1)


class SASRecEnsemble(nn.Module):
    """SASRecs of one config trained from different seeds, served as one model: the mean of their item
    scores (each member's scores are logits of a softmax over the catalogue, so the mean ranks like the
    mean log-probability) and the mean of their attention over the history."""

    def __init__(self, members: list[SASRec]) -> None:
        super().__init__()
        if len({m.config for m in members}) != 1:
            raise ValueError("ensemble members must share one config")
        self.members = nn.ModuleList(members)
        self.config = members[0].config


class SASRecForExport(nn.Module):
    """What the ONNX graph computes from (history [B, T], lengths [B]), 1 <= lengths <= T <= max_length:
    scores [B, num_items] of the next item after each history (column j = item id j + 1) and the last
    block's attention of the history's last position over the history [B, T] (mean over heads; 0 on
    padding); for an ensemble, the means over its members. Top-k stays in the service: it masks seen
    items and picks k per request with numpy.

    With a `cooccurrence` term (training/models/cooccurrence.py) the graph has a third input,
    whole_history [B, M]: the request's whole history (not cut to max_length, each item once,
    right-padded with 0), and the term's scores are added to SASRec's."""

    def __init__(self, model: SASRec | SASRecEnsemble, cooccurrence: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        self.cooccurrence = cooccurrence

    def forward(self, history: torch.Tensor, lengths: torch.Tensor,
                whole_history: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        # cast: the ensemble's ModuleList holds the SASRecs it was built from (typed as plain Modules).
        members = (cast("Iterable[SASRec]", self.model.members) if isinstance(self.model, SASRecEnsemble)
                   else [self.model])
        outputs = [next_item(member, history, lengths) for member in members]
        scores = torch.stack([o[0] for o in outputs]).mean(dim=0) if len(outputs) > 1 else outputs[0][0]
        attention = torch.stack([o[1] for o in outputs]).mean(dim=0) if len(outputs) > 1 else outputs[0][1]
        if self.cooccurrence is not None:
            if whole_history is None:
                raise ValueError("a model with a co-occurrence term needs whole_history")
            scores = scores + self.cooccurrence(whole_history)
        return scores, attention
