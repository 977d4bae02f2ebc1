"""KServe V2 / Open Inference Protocol through the real tritonclient, against the real server.

Nothing in this test process imports seqserve.oip: its messages share the standard names
(inference.*) with tritonclient's own stubs, and protobuf refuses two definitions in one process.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from exported_models import SENTIMENT
from google.protobuf import descriptor_pb2
from seqserve.v1 import sentiment_pb2
from tritonclient.grpc import service_pb2 as triton_pb2
from tritonclient.utils import InferenceServerException

REPO = pathlib.Path(__file__).resolve().parents[1]
MODEL = "sentiment-bigru"


@pytest.fixture(scope="module")
def client(server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.target)


def test_server_and_model_readiness_and_metadata(client, manifest) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, manifest["version"])
    assert not client.is_model_ready(MODEL, "999") and not client.is_model_ready("no-such-model")
    assert client.get_server_metadata().name == "seqserve"
    metadata = client.get_model_metadata(MODEL)
    assert list(metadata.versions) == [manifest["version"]] and metadata.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("input_ids", "INT64", [-1, -1]), ("attention_mask", "INT64", [-1, -1])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("probabilities", "FP32", [-1, 3]), ("attention", "FP32", [-1, -1])
    ]


def test_infer_on_raw_tensors_matches_the_sentiment_api(client, sentiment) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(SENTIMENT / "tokenizer.json"))
    texts = ["What a wonderful day", "The food was cold and the staff rude"]
    encoded = tokenizer.encode_batch(texts, add_special_tokens=False)
    width = max(len(e.ids) for e in encoded)
    ids = np.zeros((2, width), np.int64)
    mask = np.zeros((2, width), np.int64)
    for row, e in enumerate(encoded):
        ids[row, : len(e.ids)] = e.ids
        mask[row, : len(e.ids)] = 1
    inputs = [
        triton.InferInput("input_ids", ids.shape, "INT64"), triton.InferInput("attention_mask", mask.shape, "INT64")
    ]
    inputs[0].set_data_from_numpy(ids)
    inputs[1].set_data_from_numpy(mask)
    result = client.infer(MODEL, inputs, outputs=[triton.InferRequestedOutput("probabilities")], request_id="r1")
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (2, 3) and result.as_numpy("attention") is None
    assert result.get_response().id == "r1"
    served = sentiment.Analyze(sentiment_pb2.AnalyzeSentimentRequest(texts=texts, model=MODEL), timeout=30)
    for row, answer in enumerate(served.results):
        assert [p.probability for p in answer.probabilities] == pytest.approx(probabilities[row].tolist(), abs=1e-5)

    everything = client.infer(MODEL, inputs)  # no outputs named: all of them
    assert everything.as_numpy("attention").shape == (2, width)


def test_bad_v2_calls_are_refused_with_a_clear_status(client) -> None:
    ids = np.zeros((1, 3), np.int32)  # wrong datatype
    wrong = triton.InferInput("input_ids", ids.shape, "INT32")
    wrong.set_data_from_numpy(ids)
    mask = triton.InferInput("attention_mask", (1, 3), "INT64")
    mask.set_data_from_numpy(np.ones((1, 3), np.int64))
    with pytest.raises(InferenceServerException) as error:
        client.infer(MODEL, [wrong, mask])
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT" and "INT64" in error.value.message()
    with pytest.raises(InferenceServerException) as error:
        client.infer("no-such-model", [mask])
    assert error.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as error:
        client.infer(MODEL, [mask])
    assert "input_ids missing" in error.value.message()


def test_the_vendored_proto_matches_the_standard_one_field_by_field(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "oip.pb"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{REPO / 'proto'}", f"--descriptor_set_out={out}",
         "seqserve/oip/grpc_service.proto"],
        check=True, timeout=60,
    )
    ours = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    assert ours.package == "inference"
    theirs = descriptor_pb2.FileDescriptorProto()
    triton_pb2.DESCRIPTOR.CopyToProto(theirs)

    def fields(messages, prefix: str = "") -> dict[str, tuple]:
        found: dict[str, tuple] = {}
        for message in messages:
            name = prefix + message.name
            found[name] = tuple(sorted((f.name, f.number, f.type, f.label, f.type_name) for f in message.field))
            found.update(fields(message.nested_type, name + "."))
        return found

    our_fields, their_fields = fields(ours.message_type), fields(theirs.message_type)
    for name, spec in our_fields.items():
        assert their_fields.get(name) == spec, name
    (service,) = ours.service
    (standard,) = [s for s in theirs.service if s.name == "GRPCInferenceService"]
    theirs_methods = {m.name: (m.input_type, m.output_type) for m in standard.method}
    for method in service.method:
        assert theirs_methods[method.name] == (method.input_type, method.output_type)


def test_v2_shares_the_port_with_the_seqserve_api(server) -> None:
    with grpc.insecure_channel(server.target) as channel:
        live = channel.unary_unary("/inference.GRPCInferenceService/ServerLive")(b"", timeout=10)
    assert live == b"\x08\x01"  # ServerLiveResponse{live: true}


def int64_input(name: str, array: np.ndarray) -> triton.InferInput:
    tensor = triton.InferInput(name, array.shape, "INT64")
    tensor.set_data_from_numpy(array.astype(np.int64))
    return tensor


def test_issue_16_inputs_that_disagree_on_the_batch_are_refused_and_the_server_lives(client, server) -> None:
    """input_ids [2, 3] with attention_mask [1, 3] made onnxruntime's GRU abort the server (SIGABRT)."""
    for ids_rows, mask_rows in ((2, 1), (1, 2)):
        inputs = [int64_input("input_ids", np.ones((ids_rows, 3))),
                  int64_input("attention_mask", np.ones((mask_rows, 3)))]
        with pytest.raises(InferenceServerException) as error:
            client.infer(MODEL, inputs)
        message = error.value.message()
        assert error.value.status() == "StatusCode.INVALID_ARGUMENT", message
        assert all(part in message for part in ("'input_ids'", "'attention_mask'", "'batch'",
                                                f"{ids_rows} (axis 0", f"vs {mask_rows} (axis 0")), message
    inputs = [int64_input("input_ids", np.ones((1, 3))), int64_input("attention_mask", np.ones((1, 4)))]
    with pytest.raises(InferenceServerException) as error:
        client.infer(MODEL, inputs)
    assert "dimension 'sequence': 3" in error.value.message() and "vs 4" in error.value.message()
    assert server.health() == 1 and client.infer(MODEL, [int64_input("input_ids", np.ones((1, 3))),
                                                         int64_input("attention_mask", np.ones((1, 3)))])


def test_an_input_given_twice_is_refused(client) -> None:
    ids = int64_input("input_ids", np.ones((1, 3)))
    with pytest.raises(InferenceServerException) as error:
        client.infer(MODEL, [ids, int64_input("attention_mask", np.ones((1, 3))), ids])
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "inputs[2]: 'input_ids' is given more than once" in error.value.message()


def test_a_call_spanning_more_positions_than_a_task_call_may_is_refused_before_it_runs(client) -> None:
    """Within the element limit a call could ask for one sequence of millions of positions (gigabytes and
    minutes in onnxruntime). The bound, --max-v2-positions, is 16,384 positions (rows x named dims): 64
    rows of 256, the longest text a committed model reads (at 128,000 one call peaked at 0.8-2.5 GiB)."""
    inputs = [int64_input("input_ids", np.ones((1, 16_385))), int64_input("attention_mask", np.ones((1, 16_385)))]
    with pytest.raises(InferenceServerException) as error:
        client.infer(MODEL, inputs)
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "16385 positions" in error.value.message() and "limit is 16384" in error.value.message()
    inputs = [int64_input("input_ids", np.ones((2, 8_193))), int64_input("attention_mask", np.ones((2, 8_193)))]
    with pytest.raises(InferenceServerException) as error:
        client.infer(MODEL, inputs)
    assert "16386 positions" in error.value.message()


def test_a_call_whose_outputs_could_not_be_sent_is_refused_before_it_runs(client) -> None:
    """The GRU encoder's states for 64 rows of 256 positions are 50 MB, over the 4 MiB response limit:
    computing them first peaked the server at 581 MiB for an answer grpc could not send."""
    inputs = [int64_input("src_ids", np.ones((64, 256))), int64_input("src_mask", np.ones((64, 256)))]
    with pytest.raises(InferenceServerException) as error:
        client.infer("seq2seq-attention", inputs)
    assert error.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    message = error.value.message()
    assert "encoder_states 33554432 bytes" in message and "response limit of 4194304 bytes" in message


def test_only_the_outputs_a_call_asks_for_count_against_the_response_limit(client) -> None:
    """The GRU encoder's 50 MB of states are refused above; asking only for its attention keys of the same
    rows is a smaller answer (64 x 256 x 256 floats = 16 MB, still over 4 MiB), and for 4 rows (1 MB) it runs."""
    from tritonclient.grpc import InferRequestedOutput

    def ask(rows: int) -> None:
        inputs = [int64_input("src_ids", np.ones((rows, 256))), int64_input("src_mask", np.ones((rows, 256)))]
        client.infer("seq2seq-attention", inputs, outputs=[InferRequestedOutput("attention_keys")])

    with pytest.raises(InferenceServerException) as error:
        ask(64)
    assert "attention_keys 16777216 bytes" in error.value.message() and "encoder_states" not in error.value.message()
    ask(4)
