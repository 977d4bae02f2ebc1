"""seqserve.v1.Translation through the real server on a seq2seq with Luong local-p attention.

A tiny random local-p model (GRU, general score, window +-2 source tokens) is exported through the real
export command, in its own process as for real (docs/translation-graphs.md), and served by name:
greedy equals torch's greedy, a text's result does not depend on the batch it came in, beam search
returns sorted distinct n-best lists, every alignment row puts its weight within one window of
2D + 1 consecutive source tokens, and the stream spells the greedy translation. The committed
`seq2seq-local` is checked the same way when present.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import torch
from conftest import REPO, ServerProcess, launch_server
from exported_models import EXPORTED, latest_version_dir
from seqserve.v1 import translation_pb2, translation_pb2_grpc
from tokenizers import Tokenizer
from translation_support import CORPUS

from service.model.manifest import read_manifest
from training.batching import pad_batch
from training.decoding import source_ids
from training.decoding_seq2seq import greedy_decode
from training.models.seq2seq_attention import Seq2SeqAttention, Seq2SeqConfig
from training.tokenizer import BOS, EOS, PAD, train_joint_bpe

NAME = "seq2seq-local"
WINDOW = 2
TEXTS = ["Jesus wept.", "In the beginning, God created the heavens and the earth.",
         "The earth was formless and empty. Darkness was on the surface of the deep."]
LOG_PROB_TOLERANCE = 1e-4  # float32 sums in different batch shapes; observed differences are ~1e-6
Options = translation_pb2.DecodingOptions


@dataclasses.dataclass
class Served:
    model: Seq2SeqAttention
    stub: translation_pb2_grpc.TranslationStub
    version_dir: pathlib.Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("seq2seq-local")
    checkpoint = root / "checkpoint"
    checkpoint.mkdir()
    tokenizer = train_joint_bpe(CORPUS * 3, vocab_size=120, min_frequency=1)
    tokenizer.save(str(checkpoint / "tokenizer.json"))
    config = Seq2SeqConfig(vocab_size=tokenizer.get_vocab_size(), embedding_dim=16, encoder_hidden=8,
                           decoder_hidden=16, attention_dim=12, attention="general", attention_span="local-p",
                           local_window=WINDOW, dropout=0.0, pad_id=tokenizer.token_to_id(PAD),
                           bos_id=tokenizer.token_to_id(BOS), eos_id=tokenizer.token_to_id(EOS))
    torch.manual_seed(3)
    model = Seq2SeqAttention(config).eval()
    with torch.no_grad():  # untied-looking logits: a random tied model would mostly echo its input token
        assert model.output_bias is not None
        model.output_bias.copy_(torch.randn(config.vocab_size) * 2)
    (checkpoint / "model_config.json").write_text(json.dumps(dataclasses.asdict(config)))
    torch.save({"model": model.state_dict(), "metrics": {"chrf": 0.0}}, checkpoint / "best.pt")
    version_dir = root / "models" / NAME / "1"
    subprocess.run([sys.executable, "-m", "training.export.translation_seq2seq", "--checkpoint", str(checkpoint),
                    "--out", str(version_dir), "--name", NAME], check=True, cwd=REPO,
                   env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, timeout=600)
    server: ServerProcess = launch_server(root / "server.log", root / "models")
    try:
        server.wait_until_serving()
        with grpc.insecure_channel(server.target) as channel:
            yield Served(model, translation_pb2_grpc.TranslationStub(channel), version_dir)
    finally:
        server.stop()


def translate(stub: translation_pb2_grpc.TranslationStub, texts: list[str], model: str = NAME,
              **options: object) -> translation_pb2.TranslateResponse:
    request = translation_pb2.TranslateRequest(texts=texts, model=model, options=Options(**options))
    return stub.Translate(request, timeout=60)


def alignment_rows(result: translation_pb2.TranslationResult) -> np.ndarray:
    alignment = result.alignment
    return np.array(alignment.weights).reshape(len(alignment.target_tokens), len(alignment.source_tokens))


def assert_within_windows(rows: np.ndarray, window: int) -> None:
    """Each target token's weights: summing to one, nonzero only within 2D + 1 consecutive source tokens."""
    assert np.allclose(rows.sum(axis=1), 1.0, atol=1e-5)
    for row in rows:
        nonzero = np.flatnonzero(row)
        assert nonzero.max() - nonzero.min() <= 2 * window, row


def test_greedy_through_the_server_is_torch_greedy(served: Served) -> None:
    response = translate(served.stub, TEXTS, beam_size=1, max_output_tokens=12)
    assert (response.model.name, response.model.version) == (NAME, "1")
    tokenizer = Tokenizer.from_file(str(served.version_dir / "tokenizer.json"))
    for text, result in zip(TEXTS, response.results, strict=True):
        src, src_mask = pad_batch(source_ids(tokenizer, [text]), served.model.config.pad_id)
        expected = greedy_decode(served.model, src, src_mask, max_length=12)[0]
        assert len(expected) >= 2  # a real decision per step, not an immediate end of sentence
        assert list(result.hypotheses[0].tokens) == [tokenizer.id_to_token(i) for i in expected], text


@pytest.mark.parametrize("beam_size", [1, 4])
def test_a_text_decodes_the_same_alone_and_in_a_batch(served: Served, beam_size: int) -> None:
    batched = translate(served.stub, TEXTS, beam_size=beam_size, max_output_tokens=12).results
    for text, together in zip(TEXTS, batched, strict=True):
        alone = translate(served.stub, [text], beam_size=beam_size, max_output_tokens=12).results[0]
        assert list(alone.hypotheses[0].tokens) == list(together.hypotheses[0].tokens), text
        assert abs(alone.hypotheses[0].log_prob - together.hypotheses[0].log_prob) < LOG_PROB_TOLERANCE


def test_beam_n_best_are_sorted_distinct_and_their_alignment_stays_in_the_window(served: Served) -> None:
    response = translate(served.stub, TEXTS[1:], beam_size=4, n_best=3, max_output_tokens=10,
                         return_alignment=True)
    for result in response.results:
        hypotheses = result.hypotheses
        assert len(hypotheses) == 3
        assert [h.score for h in hypotheses] == sorted((h.score for h in hypotheses), reverse=True)
        assert len({tuple(h.tokens) for h in hypotheses}) == 3
        assert list(result.alignment.target_tokens) == list(hypotheses[0].tokens)
        assert result.source_tokens > 2 * WINDOW + 1  # long enough for the window to exclude something
        assert_within_windows(alignment_rows(result), WINDOW)


def test_the_stream_spells_the_greedy_translation(served: Served) -> None:
    unary = translate(served.stub, TEXTS[1:2], beam_size=1, max_output_tokens=10).results[0].hypotheses[0]
    request = translation_pb2.TranslateStreamRequest(text=TEXTS[1], model=NAME, max_output_tokens=10)
    pieces = list(served.stub.TranslateStream(request, timeout=60))
    assert [p.token for p in pieces] == list(unary.tokens)
    assert "".join(p.text for p in pieces) == unary.text
    assert {(p.model.name, p.model.version) for p in pieces} == {(NAME, "1")}


@pytest.mark.skipif(not (EXPORTED / NAME).is_dir(), reason="no committed seq2seq-local")
def test_the_committed_local_model_serves_greedy_beam_stream_and_windowed_alignments(channel: grpc.Channel) -> None:
    stub = translation_pb2_grpc.TranslationStub(channel)
    version_dir = latest_version_dir(NAME)
    window = read_manifest(version_dir).data["training"]["Seq2SeqConfig"]["local_window"]
    texts = ["Jesus wept.", "God is love, and he who remains in love remains in God, and God remains in him."]
    response = translate(stub, texts, beam_size=4, n_best=2, return_alignment=True)
    assert response.model.version == version_dir.name
    for result in response.results:
        assert result.hypotheses[0].text and len(result.hypotheses) == 2
        assert_within_windows(alignment_rows(result), window)
    greedy = translate(stub, texts[:1], beam_size=1).results[0].hypotheses[0]
    pieces = list(stub.TranslateStream(translation_pb2.TranslateStreamRequest(text=texts[0], model=NAME),
                                       timeout=60))
    assert "".join(p.text for p in pieces) == greedy.text
