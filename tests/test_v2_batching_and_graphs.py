"""V2 ModelInfer goes through the dynamic batcher, and every graph of a model is reachable by name.

Through the real tritonclient against real servers (see test_v2_protocol.py for why this process
never imports seqserve.oip).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as triton
from exported_models import SENTIMENT, latest_version_dir
from reliability_support import metric_sum
from tokenizers import Tokenizer
from tritonclient.utils import InferenceServerException

MODEL = "sentiment-bigru"
MODEL_INT8 = "sentiment-bigru-int8"
TEXTS = ["What a wonderful day", "The food was cold", "I loved every minute", "Never again, awful"]
WIDTH = 8  # every call pads to this width, so all rows have one shape and may share a batch


def sentiment_inputs(texts: list[str], bad_id: bool = False) -> list[triton.InferInput]:
    tokenizer = Tokenizer.from_file(str(SENTIMENT / "tokenizer.json"))
    ids = np.zeros((len(texts), WIDTH), np.int64)
    mask = np.zeros((len(texts), WIDTH), np.int64)
    for row, encoding in enumerate(tokenizer.encode_batch(texts, add_special_tokens=False)):
        n = min(WIDTH, len(encoding.ids))
        ids[row, :n] = encoding.ids[:n]
        mask[row, :n] = 1
    if bad_id:
        ids[0, 0] = 10**9  # far outside the embedding table: onnxruntime refuses the row
    inputs = [triton.InferInput("input_ids", ids.shape, "INT64"),
              triton.InferInput("attention_mask", mask.shape, "INT64")]
    inputs[0].set_data_from_numpy(ids)
    inputs[1].set_data_from_numpy(mask)
    return inputs


def probabilities(client: triton.InferenceServerClient, texts: list[str], model: str = MODEL) -> np.ndarray:
    result = client.infer(model, sentiment_inputs(texts), outputs=[triton.InferRequestedOutput("probabilities")])
    return result.as_numpy("probabilities")


@pytest.fixture
def waiting_server(start_server):
    # A long fixed queue delay: calls sent together certainly meet in the queue.
    return start_server(extra_args=["--queue-delay-policy", "fixed", "--max-queue-delay-ms", "300"])


def test_concurrent_v2_calls_of_one_shape_run_as_one_batch_and_get_their_own_rows(waiting_server) -> None:
    client = triton.InferenceServerClient(waiting_server.target)
    alone = [probabilities(client, [text]) for text in TEXTS]
    batches_before = metric_sum(waiting_server.metrics_url, "seqserve_batch_size_texts_count",
                                model=f"{MODEL}:model.onnx")
    with ThreadPoolExecutor(len(TEXTS)) as pool:
        together = list(pool.map(lambda text: probabilities(client, [text]), TEXTS))
    batches = metric_sum(waiting_server.metrics_url, "seqserve_batch_size_texts_count",
                         model=f"{MODEL}:model.onnx") - batches_before
    assert batches < len(TEXTS)  # at least two calls shared a model run
    for mine, reference in zip(together, alone, strict=True):
        np.testing.assert_allclose(mine, reference, atol=1e-6)  # same numbers as running alone


def test_concurrent_calls_to_an_int8_graph_are_not_stacked_so_each_gets_the_numbers_it_gets_alone(
        waiting_server) -> None:
    # Stacked, the 4 rows of the dynamically quantized graph differ from their single runs by up to 4e-4
    # (its activation scales span the batch); concurrent callers must not change each other's numbers.
    client = triton.InferenceServerClient(waiting_server.target)
    alone = [probabilities(client, [text], MODEL_INT8) for text in TEXTS]
    with ThreadPoolExecutor(len(TEXTS)) as pool:
        together = list(pool.map(lambda text: probabilities(client, [text], MODEL_INT8), TEXTS))
    for mine, reference in zip(together, alone, strict=True):
        np.testing.assert_allclose(mine, reference, atol=1e-7)
    # One call of four rows runs a row per run too, so each row gets its numbers alone, as in the task API
    # (in one run the rows differed from their single runs by up to 4e-4).
    stacked = probabilities(client, TEXTS, MODEL_INT8)
    np.testing.assert_allclose(stacked, np.concatenate(alone), atol=1e-7)


def test_a_call_with_bad_values_fails_alone_not_the_calls_batched_with_it(waiting_server) -> None:
    client = triton.InferenceServerClient(waiting_server.target)

    def call(index: int) -> str:
        try:
            client.infer(MODEL, sentiment_inputs([TEXTS[index]], bad_id=index == 0))
            return "OK"
        except InferenceServerException as exc:
            return exc.status()

    with ThreadPoolExecutor(len(TEXTS)) as pool:
        outcomes = list(pool.map(call, range(len(TEXTS))))
    assert outcomes == ["StatusCode.INVALID_ARGUMENT", "OK", "OK", "OK"]
    assert waiting_server.health() == 1


def test_every_graph_of_a_model_is_served_under_its_own_name(server) -> None:
    client = triton.InferenceServerClient(server.target)
    assert client.is_model_ready("transformer") and client.is_model_ready("transformer.decoder_step")
    assert not client.is_model_ready("transformer.no_such_graph")
    step = client.get_model_metadata("transformer.decoder_step")
    assert step.name == "transformer.decoder_step"
    assert "token_ids" in [t.name for t in step.inputs] and "log_probs" in [t.name for t in step.outputs]

    # One real decoding step: the encoder (the model's main graph), then the decoder step on its output.
    tokenizer = Tokenizer.from_file(str(latest_version_dir("transformer") / "tokenizer.json"))
    ids = np.array([[*tokenizer.encode("Jesus wept.").ids, 3]], np.int64)  # + eos, as the pipeline does
    src = [triton.InferInput("src_ids", ids.shape, "INT64"), triton.InferInput("src_mask", ids.shape, "INT64")]
    src[0].set_data_from_numpy(ids)
    src[1].set_data_from_numpy(np.ones_like(ids))
    encoded = client.infer("transformer", src)
    feeds = {"token_ids": np.array([2], np.int64), "src_mask": np.ones_like(ids)}
    for meta in step.inputs:
        if meta.name.startswith("cross_"):
            feeds[meta.name] = encoded.as_numpy(meta.name)
        elif meta.name.startswith("past_"):  # [batch, heads, cache, head width]: an empty cache, one row
            _, heads, _, width = meta.shape
            feeds[meta.name] = np.zeros((1, heads, 0, width), np.float32)
    inputs = []
    for name, array in feeds.items():
        tensor = triton.InferInput(name, array.shape, "INT64" if array.dtype == np.int64 else "FP32")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = client.infer("transformer.decoder_step", inputs, outputs=[triton.InferRequestedOutput("log_probs")])
    log_probs = result.as_numpy("log_probs")
    assert log_probs.shape == (1, 8000)
    assert np.exp(log_probs).sum() == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(InferenceServerException) as error:
        client.get_model_metadata("transformer.no_such_graph")
    assert error.value.status() == "StatusCode.NOT_FOUND" and "transformer.decoder_step" in error.value.message()


def test_only_a_decoder_cache_may_be_empty_and_only_along_its_cache_axis(server) -> None:
    """An empty tensor made onnxruntime's GRU abort the whole server once (test_reliability_fuzz.py):
    the one empty input allowed is the key/value cache the manifest says decoding starts from."""
    client = triton.InferenceServerClient(server.target)

    def refusal(model: str, name: str, shape: tuple[int, ...]) -> str:
        tensor = triton.InferInput(name, shape, "FP32")
        tensor.set_data_from_numpy(np.zeros(shape, np.float32))
        with pytest.raises(InferenceServerException) as error:
            client.infer(model, [tensor])
        return error.value.message()

    # The GRU decoder's hidden state is never empty.
    assert "has no elements" in refusal("seq2seq-attention.decoder_step", "past_hidden", (0, 1, 256))
    # The Transformer's cache may be empty along its cache axis only (the call then fails for the
    # inputs it lacks, which shows the empty cache itself passed).
    assert "missing" in refusal("transformer.decoder_step", "past_self_key_0", (1, 4, 0, 64))
    assert "has no elements" in refusal("transformer.decoder_step", "past_self_key_0", (0, 4, 3, 64))
    assert server.health() == 1
