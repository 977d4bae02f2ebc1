"""ConvS2S in the two-graph contract (docs/translation-graphs.md), on a tiny random model exported by the
real command: the step graph fed one token at a time (its cache: each layer's last kernel - 1 inputs, and
the position) reproduces torch's full teacher-forced pass, a text decodes the same alone and in a batch,
and the real server serves it by name through `Translate` and `TranslateStream` unchanged."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import grpc
import numpy as np
import onnx
import pytest
import torch
from conftest import ServerProcess, launch_server
from exported_models import EXPORTED, latest_version_dir
from seqserve.v1 import translation_pb2, translation_pb2_grpc
from translation_support import load_tiny_convs2s, tiny_convs2s_model_dir

from service.model.manifest import read_manifest, verify_checksums
from service.pipelines.seq2seq_runtime import StepRunner
from service.pipelines.translation import DecodeOptions, TranslationPipeline, TranslationRequest
from service.runtime.version_loader import load_version
from training.batching import pad_batch
from training.decoding_seq2seq import greedy_decode
from training.export.translation_parity import LOG_PROB_TOLERANCE, stepwise_log_probs
from training.models.convs2s import ConvS2S

pytestmark = pytest.mark.slow  # exports a model in a process of its own (~10 s of CPU)

TEXTS = ["Jesus wept.", "In the beginning, God created the heavens and the earth.",
         "Dieu dit: Que la lumière soit!", "The earth was formless and empty."]
Options = translation_pb2.DecodingOptions


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tiny_convs2s_model_dir(tmp_path_factory.mktemp("tiny-convs2s"))


@pytest.fixture(scope="module")
def model(models: pathlib.Path) -> ConvS2S:
    torch.set_num_threads(1)
    return load_tiny_convs2s(models)


@pytest.fixture(scope="module")
def pipeline(models: pathlib.Path) -> TranslationPipeline:
    return TranslationPipeline(load_version(models / "convs2s" / "1"))


def random_batch(src_lengths: list[int], tgt_lengths: list[int], config: object, seed: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    vocab, bos = config.vocab_size, config.bos_id  # type: ignore[attr-defined]

    def rows(lengths: list[int]) -> list[list[int]]:
        return [torch.randint(4, vocab, (n,), generator=generator).tolist() for n in lengths]

    src, src_mask = pad_batch(rows(src_lengths), 0)
    tgt, tgt_mask = pad_batch([[bos, *row] for row in rows(tgt_lengths)], 0)
    return src, src_mask, tgt, tgt_mask


def test_manifest_states_are_the_convolution_caches_and_the_position(models: pathlib.Path, model: ConvS2S) -> None:
    version_dir = models / "convs2s" / "1"
    manifest = read_manifest(version_dir)
    verify_checksums(manifest)
    decoding = manifest.data["decoding"]
    assert decoding["memory"] == ["attention_keys", "attention_values"]
    assert decoding["state"] == {"past_position": "present_position", "past_conv_0": "present_conv_0",
                                 "past_conv_1": "present_conv_1"}
    kernel, channels = model.config.decoder_kernel, model.config.channels
    assert decoding["initial_state"] == {"past_position": {"zeros": ["batch", 1]},
                                         "past_conv_0": {"zeros": ["batch", kernel - 1, channels]},
                                         "past_conv_1": {"zeros": ["batch", kernel - 1, channels]}}
    parity = manifest.data["export_parity"]
    assert parity["greedy_tokens_equal"] is True and parity["max_abs_log_prob_difference"] < LOG_PROB_TOLERANCE
    # Weights are stored float16; the token embedding, read by both graphs, once.
    assert manifest.data["onnx"]["external_data"]["tensors"] == ["model.embedding.weight"]
    for graph in ("encoder.onnx", "decoder_step.onnx"):
        stored = onnx.load(str(version_dir / graph), load_external_data=False).graph.initializer
        conv_weights = [i for i in stored if i.name.endswith("conv.weight")]
        assert conv_weights and {i.data_type for i in conv_weights} == {onnx.TensorProto.FLOAT16}


@pytest.mark.parametrize(("src_lengths", "tgt_lengths"), [([6], [5]), ([2, 9, 5], [7, 3, 9]),
                                                          ([11, 1, 4, 8, 3], [2, 10, 6, 4, 8])])
def test_onnx_steps_reproduce_the_torch_full_forward(pipeline: TranslationPipeline, model: ConvS2S,
                                                     src_lengths: list[int], tgt_lengths: list[int]) -> None:
    src, src_mask, tgt, tgt_mask = random_batch(src_lengths, tgt_lengths, model.config, len(src_lengths))
    with torch.no_grad():
        expected = torch.log_softmax(model(src, src_mask, tgt), dim=-1).numpy()
    stepped = stepwise_log_probs(pipeline.runner, src.numpy(), src_mask.numpy(), tgt.numpy())
    real = tgt_mask.bool().numpy()
    assert np.abs(stepped[real] - expected[real]).max() < LOG_PROB_TOLERANCE
    assert (stepped[real].argmax(-1) == expected[real].argmax(-1)).all()


def test_the_cache_keeps_its_size_and_the_position_counts_the_steps(pipeline: TranslationPipeline) -> None:
    runner: StepRunner = pipeline.runner
    src, src_mask = pipeline._pad([pipeline.source_ids(t) for t in TEXTS[:2]])
    state = runner.encode(src, src_mask)
    shapes = {name: value.shape for name, value in state.state.items()}
    for _ in range(5):
        _, attention, state = runner.step(np.full(2, runner.bos_id), state)
    assert {name: value.shape for name, value in state.state.items()} == shapes
    assert state.state["past_position"].tolist() == [[5.0], [5.0]]
    assert np.allclose(attention.sum(-1), 1.0, atol=1e-5) and attention[0, src_mask[0] == 0].max(initial=0) < 1e-6


def test_served_greedy_equals_torch_greedy(pipeline: TranslationPipeline, model: ConvS2S) -> None:
    greedy = DecodeOptions(beam_size=1)
    results = pipeline([TranslationRequest(text, greedy) for text in TEXTS])
    for text, result in zip(TEXTS, results, strict=True):
        assert result is not None
        ids = pipeline.source_ids(text)
        src, src_mask = pad_batch([ids], model.config.pad_id)
        expected = greedy_decode(model, src, src_mask, pipeline.max_steps(len(ids), greedy))[0]
        assert result.hypotheses[0].tokens == [pipeline.tokenizer.id_to_token(i) for i in expected], text


@pytest.mark.parametrize("options", [DecodeOptions(beam_size=1), DecodeOptions(beam_size=4, n_best=2)],
                         ids=["greedy", "beam4"])
def test_a_text_decodes_the_same_alone_and_in_a_batch(pipeline: TranslationPipeline, options: DecodeOptions) -> None:
    batched = pipeline([TranslationRequest(text, options) for text in TEXTS])
    for text, in_batch in zip(TEXTS, batched, strict=True):
        alone = pipeline([TranslationRequest(text, options)])[0]
        assert alone is not None and in_batch is not None
        assert [h.tokens for h in alone.hypotheses] == [h.tokens for h in in_batch.hypotheses], text
        assert [h.score for h in alone.hypotheses] == pytest.approx([h.score for h in in_batch.hypotheses], abs=1e-4)


@pytest.fixture(scope="module")
def stub(models: pathlib.Path, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[translation_pb2_grpc.TranslationStub]:
    server: ServerProcess = launch_server(tmp_path_factory.mktemp("convs2s-server") / "server.log", models)
    try:
        server.wait_until_serving()
        with grpc.insecure_channel(server.target) as channel:
            yield translation_pb2_grpc.TranslationStub(channel)
    finally:
        server.stop()


def translate(stub: translation_pb2_grpc.TranslationStub, texts: list[str], **options: object
              ) -> translation_pb2.TranslateResponse:
    request = translation_pb2.TranslateRequest(texts=texts, model="convs2s", options=Options(**options))
    return stub.Translate(request, timeout=60)


def test_the_server_translates_greedy_and_beam_with_n_best_and_alignment(stub, pipeline) -> None:
    greedy = translate(stub, TEXTS, beam_size=1, max_output_tokens=12)
    assert (greedy.model.name, greedy.model.version) == ("convs2s", "1")
    expected = pipeline([TranslationRequest(t, DecodeOptions(beam_size=1, max_output_tokens=12)) for t in TEXTS])
    assert [list(r.hypotheses[0].tokens) for r in greedy.results] == [e.hypotheses[0].tokens for e in expected]

    beam = translate(stub, TEXTS[1:2], beam_size=4, n_best=3, max_output_tokens=8, return_alignment=True)
    result = beam.results[0]
    scores = [h.score for h in result.hypotheses]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert len({tuple(h.tokens) for h in result.hypotheses}) == 3
    alignment = result.alignment
    assert list(alignment.target_tokens) == list(result.hypotheses[0].tokens)
    assert alignment.source_tokens[-1] == "[EOS]" and len(alignment.source_tokens) == result.source_tokens
    weights = np.array(alignment.weights).reshape(len(alignment.target_tokens), len(alignment.source_tokens))
    assert np.allclose(weights.sum(axis=1), 1.0, atol=1e-4)  # each row: the layers' mean attention


def test_the_server_streams_the_greedy_translation(stub) -> None:
    unary = translate(stub, TEXTS[1:2], beam_size=1, max_output_tokens=10).results[0].hypotheses[0]
    request = translation_pb2.TranslateStreamRequest(text=TEXTS[1], model="convs2s", max_output_tokens=10)
    pieces = list(stub.TranslateStream(request, timeout=60))
    assert [p.token for p in pieces] == list(unary.tokens)
    assert "".join(p.text for p in pieces) == unary.text
    assert {(p.model.name, p.model.version) for p in pieces} == {("convs2s", "1")}


def test_bad_requests_name_the_field_and_the_limit(stub) -> None:
    with pytest.raises(grpc.RpcError) as error:
        translate(stub, ["fine"], max_output_tokens=257)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "options.max_output_tokens: 257 exceeds the limit of 256" in error.value.details()


@pytest.mark.skipif(not (EXPORTED / "convs2s").is_dir(), reason="no committed ConvS2S model")
def test_the_committed_convs2s_serves_greedy_beam_and_stream(channel) -> None:
    committed = translation_pb2_grpc.TranslationStub(channel)
    response = translate(committed, ["Jesus wept.", "God is love."], beam_size=4, n_best=2, return_alignment=True)
    assert response.model.version == latest_version_dir("convs2s").name
    assert all(r.hypotheses[0].text and len(r.hypotheses) == 2 and r.alignment.weights for r in response.results)
    assert response.results[0].HasField("confidence")
    request = translation_pb2.TranslateStreamRequest(text="Jesus wept.", model="convs2s")
    pieces = list(committed.TranslateStream(request, timeout=60))
    greedy = translate(committed, ["Jesus wept."], beam_size=1).results[0].hypotheses[0]
    assert "".join(p.text for p in pieces) == greedy.text
