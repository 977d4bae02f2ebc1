"""Export parity of the seq2seq-attention model (docs/translation-graphs.md), on tiny random models.

onnxruntime driving decoder_step.onnx one token at a time, its hidden state fed back (past -> present),
must reproduce torch's full teacher-forced forward pass: log-probs within LOG_PROB_TOLERANCE at every
real target position, and identical greedy tokens, for several batch sizes and lengths with padding.
Four variants are exported (~10-20 s each): the trained configuration (GRU, "general", memory = states +
keys), the one with every optional state (2-layer LSTM, concat attention, input feeding), and the local-p
span (its window placed inside the step graph from src_mask) with a GRU and with the Elman cell.

The export runs in its own process, as `python -m training.export.translation_seq2seq` does for real:
in a process that had exported the sentiment model before, torch's exporter folded the encoder's
`arange(src_len)` to a constant of the example's length, and onnxruntime failed with GatherElements
indices out of range at other lengths (reproduced: test_sentiment_export.py, then this file).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

from service.model.manifest import read_manifest, verify_checksums
from training.batching import pad_batch
from training.decoding_seq2seq import greedy_decode
from training.export.translation_parity import LOG_PROB_TOLERANCE as EXPORT_TOLERANCE
from training.models.seq2seq_attention import Seq2SeqAttention, Seq2SeqConfig
from training.tokenizer import BOS, EOS, PAD, train_joint_bpe

pytestmark = pytest.mark.slow  # exports four seq2seq variants (~50 s); served: test_grpc_translation

REPO = pathlib.Path(__file__).resolve().parents[1]
LOG_PROB_TOLERANCE = 1e-4  # float32, different GRU/matmul kernels; measured max differences are ~1e-6
SENTENCES = ["In the beginning God created the heavens and the earth.",
             "Au commencement, Dieu créa les cieux et la terre.", "Jesus wept.", "Jésus pleura.",
             "The earth was formless and empty.", "La terre était informe et vide."]
VARIANTS = {
    "gru-general": {"attention": "general"},
    "lstm-concat-feeding": {"rnn_type": "lstm", "attention": "concat", "input_feeding": True,
                            "encoder_layers": 2, "decoder_layers": 2},
    # A window narrower than the test sources (up to 11 tokens), so positions outside it exist.
    "gru-general-local": {"attention": "general", "attention_span": "local-p", "local_window": 2},
    "rnn-concat-local": {"rnn_type": "rnn", "attention": "concat", "attention_span": "local-p", "local_window": 3,
                         "encoder_layers": 2, "decoder_layers": 2},
}


class Exported:
    def __init__(self, model: Seq2SeqAttention, version_dir: pathlib.Path) -> None:
        self.model = model
        self.version_dir = version_dir
        self.decoding = read_manifest(version_dir).data["decoding"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.encoder = ort.InferenceSession(str(version_dir / "encoder.onnx"), options)
        self.decoder = ort.InferenceSession(str(version_dir / "decoder_step.onnx"), options)

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(memory, initial state by past_ name), following the manifest's decoding section."""
        names = [o.name for o in self.encoder.get_outputs()]
        outputs = dict(zip(names, self.encoder.run(None, {"src_ids": src.numpy(), "src_mask": src_mask.numpy()}),
                           strict=True))
        state = {past: outputs[init["encoder_output"]] for past, init in self.decoding["initial_state"].items()}
        return {name: outputs[name] for name in self.decoding["memory"]}, state

    def step(self, tokens: np.ndarray, src_mask: torch.Tensor, memory: dict[str, np.ndarray],
             state: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        outputs = ["log_probs", "cross_attention", *self.decoding["state"].values()]
        log_probs, attention, *present = self.decoder.run(
            outputs, {"token_ids": tokens.astype(np.int64), "src_mask": src_mask.numpy(), **memory, **state})
        return log_probs, attention, dict(zip(self.decoding["state"], present, strict=True))


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp(request.param)
    checkpoint = root / "checkpoint"
    checkpoint.mkdir()
    tokenizer = train_joint_bpe(SENTENCES * 3, vocab_size=120, min_frequency=1)
    tokenizer.save(str(checkpoint / "tokenizer.json"))
    config = Seq2SeqConfig(vocab_size=tokenizer.get_vocab_size(), embedding_dim=16, encoder_hidden=8,
                           decoder_hidden=16, attention_dim=12, pad_id=tokenizer.token_to_id(PAD),
                           bos_id=tokenizer.token_to_id(BOS), eos_id=tokenizer.token_to_id(EOS),
                           **VARIANTS[request.param])
    torch.manual_seed(0)
    model = Seq2SeqAttention(config).eval()
    (checkpoint / "model_config.json").write_text(json.dumps(config.__dict__))
    torch.save({"model": model.state_dict(), "metrics": {"chrf": 0.0}}, checkpoint / "best.pt")
    out = root / "seq2seq-attention" / "1"
    subprocess.run([sys.executable, "-m", "training.export.translation_seq2seq", "--checkpoint", str(checkpoint),
                    "--out", str(out)], check=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                   capture_output=True, timeout=600)
    return Exported(model, out)


def random_batch(src_lengths: list[int], tgt_lengths: list[int], vocab: int, seed: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    def rows(lengths: list[int]) -> list[list[int]]:
        return [torch.randint(4, vocab, (n,), generator=generator).tolist() for n in lengths]

    src, src_mask = pad_batch(rows(src_lengths), 0)
    tgt, tgt_mask = pad_batch([[2, *row] for row in rows(tgt_lengths)], 0)
    return src, src_mask, tgt, tgt_mask


def test_manifest_describes_the_graphs(exported: Exported) -> None:
    manifest = read_manifest(exported.version_dir)
    verify_checksums(manifest)
    assert manifest.task == "translation" and manifest.name == "seq2seq-attention"
    assert {"encoder.onnx", "decoder_step.onnx", "tokenizer.json"} <= set(manifest.files)
    decoding = manifest.data["decoding"]
    encoder_outputs = {o.name for o in exported.encoder.get_outputs()}
    step_inputs = {i.name for i in exported.decoder.get_inputs()}
    step_outputs = {o.name for o in exported.decoder.get_outputs()}
    assert set(decoding["memory"]) <= encoder_outputs and set(decoding["memory"]) <= step_inputs
    assert set(decoding["state"]) <= step_inputs and set(decoding["state"].values()) <= step_outputs
    assert {init["encoder_output"] for init in decoding["initial_state"].values()} <= encoder_outputs
    assert set(decoding["initial_state"]) == set(decoding["state"])
    assert {"log_probs", "cross_attention"} <= step_outputs
    # The exporter measured its own parity on the sample inputs and recorded it.
    parity = manifest.data["export_parity"]
    assert parity["greedy_tokens_equal"] is True and parity["max_abs_log_prob_difference"] < EXPORT_TOLERANCE


@pytest.mark.parametrize(("src_lengths", "tgt_lengths"), [
    ([6], [5]),
    ([2, 9, 5], [7, 3, 9]),
    ([11, 1, 4, 8, 3], [2, 10, 6, 4, 8]),
])
def test_onnx_steps_reproduce_torch_full_forward(exported: Exported, src_lengths: list[int],
                                                 tgt_lengths: list[int]) -> None:
    model = exported.model
    src, src_mask, tgt, tgt_mask = random_batch(src_lengths, tgt_lengths, model.config.vocab_size, len(src_lengths))
    with torch.no_grad():
        expected = torch.log_softmax(model(src, src_mask, tgt), dim=-1).numpy()
    memory, state = exported.encode(src, src_mask)
    steps, weights = [], []
    for t in range(tgt.shape[1]):
        log_probs, attention, state = exported.step(tgt[:, t].numpy(), src_mask, memory, state)
        steps.append(log_probs)
        weights.append(attention)
    stepped, attention = np.stack(steps, axis=1), np.stack(weights, axis=1)
    real = tgt_mask.bool().numpy()
    assert np.abs(stepped[real] - expected[real]).max() < LOG_PROB_TOLERANCE
    assert (stepped[real].argmax(-1) == expected[real].argmax(-1)).all()
    assert np.allclose(attention.sum(-1), 1.0, atol=1e-5)
    assert attention[np.broadcast_to((src_mask == 0).numpy()[:, None, :], attention.shape)].max(initial=0) < 1e-6


def onnx_greedy(exported: Exported, src: torch.Tensor, src_mask: torch.Tensor, max_length: int) -> list[list[int]]:
    config = exported.model.config
    memory, state = exported.encode(src, src_mask)
    tokens = np.full(src.shape[0], config.bos_id, dtype=np.int64)
    finished = np.zeros(src.shape[0], dtype=bool)
    steps = []
    for _ in range(max_length):
        log_probs, _, state = exported.step(tokens, src_mask, memory, state)
        tokens = np.where(finished, config.pad_id, log_probs.argmax(-1))
        steps.append(tokens)
        finished |= tokens == config.eos_id
        if finished.all():
            break
    rows = np.stack(steps, axis=1).tolist()
    return [row[: row.index(config.eos_id)] if config.eos_id in row else row for row in rows]


@pytest.mark.parametrize("src_lengths", [[5], [3, 8], [9, 2, 6, 4]])
def test_onnx_greedy_equals_torch_greedy(exported: Exported, src_lengths: list[int]) -> None:
    src, src_mask, _, _ = random_batch(src_lengths, [1] * len(src_lengths), exported.model.config.vocab_size, 50)
    assert onnx_greedy(exported, src, src_mask, 15) == greedy_decode(exported.model, src, src_mask, 15)


def test_served_pipeline_decodes_the_export(exported: Exported) -> None:
    """The generic service pipeline drives these graphs from the manifest alone, as torch would."""
    translation = pytest.importorskip("service.pipelines.translation")
    from service.runtime.version_loader import load_version

    pipeline = translation.TranslationPipeline(load_version(exported.version_dir))
    greedy = translation.DecodeOptions(beam_size=1)
    texts = ["God created the earth.", "Jesus wept.", "The heavens and the earth were formless."]
    results = pipeline([translation.TranslationRequest(text, greedy) for text in texts])
    tokenizer = pipeline.tokenizer
    for text, result in zip(texts, results, strict=True):
        ids = pipeline.source_ids(text)
        src, src_mask = pad_batch([ids], exported.model.config.pad_id)
        expected = greedy_decode(exported.model, src, src_mask, pipeline.max_steps(len(ids), greedy))[0]
        assert result.hypotheses[0].tokens == [tokenizer.id_to_token(i) for i in expected], text
    beams = pipeline([translation.TranslationRequest(texts[0], translation.DecodeOptions(beam_size=3, n_best=3))])
    scores = [h.score for h in beams[0].hypotheses]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True) and np.isfinite(scores).all()
