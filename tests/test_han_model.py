"""The HAN model, its export and its data: padding never changes a document's outputs, the ONNX graph
agrees with torch, documents are grouped and split by document."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch

from training.data.documents import Document, group_documents, split
from training.data.sentiment import Sentence
from training.export.han import export_han, han_parity
from training.models.han import HanConfig, HierarchicalAttentionNetwork
from training.train_han import pad_documents

PAD = 0


def tiny_model() -> HierarchicalAttentionNetwork:
    torch.manual_seed(0)
    config = HanConfig(vocab_size=50, embedding_dim=8, word_hidden_dim=6, sentence_hidden_dim=5, attention_dim=4,
                       dropout=0.0, pad_id=PAD)
    return HierarchicalAttentionNetwork(config).eval()


def random_documents(seed: int, count: int) -> list[list[list[int]]]:
    rng = np.random.default_rng(seed)
    return [[[int(t) for t in rng.integers(1, 50, size=rng.integers(1, 9))] for _ in range(rng.integers(1, 6))]
            for _ in range(count)]


def test_a_document_alone_and_padded_in_a_batch_gives_the_same_outputs() -> None:
    model = tiny_model()
    documents = random_documents(1, 6)
    batch_ids, batch_mask = pad_documents(documents, PAD)
    with torch.no_grad():
        batched = model(batch_ids, batch_mask)
        for i, document in enumerate(documents):
            ids, mask = pad_documents([document], PAD)
            alone = model(ids, mask)
            sentences, words = ids.shape[1], ids.shape[2]
            torch.testing.assert_close(batched.document_logits[i], alone.document_logits[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(batched.sentence_weights[i, :sentences], alone.sentence_weights[0],
                                       atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(batched.sentence_logits[i, :sentences], alone.sentence_logits[0],
                                       atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(batched.word_weights[i, :sentences, :words], alone.word_weights[0],
                                       atol=1e-5, rtol=1e-5)
            # padded sentences get no sentence attention
            assert float(batched.sentence_weights[i, sentences:].sum()) < 1e-6


def test_onnx_export_agrees_with_torch(tmp_path: pathlib.Path) -> None:
    model = tiny_model()
    example_ids, example_mask = pad_documents(random_documents(2, 3), PAD)
    export_han(model, example_ids, example_mask, tmp_path / "model.onnx")
    # Other shapes than the example's: every axis is dynamic.
    ids, mask = pad_documents(random_documents(3, 7), PAD)
    parity = han_parity(model, tmp_path / "model.onnx", ids, mask)
    assert parity["passed"], parity
    assert max(parity["max_abs_difference"].values()) < 1e-5


def rated(domain: str, sentence_id: str, score: float) -> Sentence:
    return Sentence(domain, sentence_id, f"text {sentence_id}", score)


def test_documents_group_sentences_in_number_order_and_label_by_mean_score() -> None:
    sentences = [rated("nyt", "2_10", 1.0), rated("nyt", "2_2", 0.5), rated("nyt", "2_1", -3.0),
                 rated("amazon", "2_1", 2.0), rated("movies", "7", 4.0)]
    documents = {(d.domain, d.id): d for d in group_documents(sentences)}
    assert set(documents) == {("nyt", "2"), ("amazon", "2")}  # movie snippets are not documents
    nyt = documents[("nyt", "2")]
    assert [s.id for s in nyt.sentences] == ["2_1", "2_2", "2_10"]
    assert nyt.score == pytest.approx(-0.5)
    assert nyt.label == 0  # mean -0.5 is negative under the sentence thresholds
    assert nyt.text == "text 2_1 text 2_2 text 2_10"
    assert documents[("amazon", "2")].label == 2


def test_split_keeps_every_document_whole_and_is_independent_of_order() -> None:
    sentences = [rated(domain, f"{doc}_{n}", float(doc % 3 - 1)) for domain in ("amazon", "nyt")
                 for doc in range(40) for n in range(1, 4)]
    parts = split(group_documents(sentences))
    again = split(group_documents(list(reversed(sentences))))
    key = lambda rows: sorted((d.domain, d.id) for d in rows)  # noqa: E731
    assert all(key(parts[name]) == key(again[name]) for name in parts)
    seen: list[tuple[str, str]] = [k for rows in parts.values() for k in key(rows)]
    assert len(seen) == len(set(seen)) == 80
    assert [len(parts[name]) for name in ("train", "dev", "test")] == [64, 8, 8]
    assert all(isinstance(d, Document) and len(d.sentences) == 3 for rows in parts.values() for d in rows)
