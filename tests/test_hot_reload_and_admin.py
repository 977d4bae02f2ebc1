"""Hot reload under load, refusal of a corrupt version, and the Admin service with its token."""

from __future__ import annotations

import pathlib
import shutil
import threading
import urllib.request

import grpc
import pytest
from exported_models import SENTIMENT, copy_as_version
from prometheus_client.parser import text_string_to_metric_families
from seqserve.v1 import admin_pb2, admin_pb2_grpc, models_pb2, models_pb2_grpc, sentiment_pb2, sentiment_pb2_grpc
from waiting import wait_until

ADMIN_TOKEN = "admin-token-0123456789abcdef"
API_TOKEN = "api-token-0123456789abcdef"


def publish_version(model_dir: pathlib.Path, version: str, corrupt: bool = False) -> None:
    """Write the version beside the repository, then rename it in: the poller never sees half a copy."""
    staging = copy_as_version(SENTIMENT, model_dir.parent / "staging" / version, version)
    if corrupt:
        path = staging / "model.onnx"
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
    staging.rename(model_dir / "sentiment-bigru" / version)


def metric(server, metric_name: str, **labels: str) -> float | None:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == metric_name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


class Load:
    """Two client threads calling Analyze back to back (bounded), recording versions and failures."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.insecure_channel(target)
        self.stub = sentiment_pb2_grpc.SentimentStub(self.channel)
        self.versions: list[str] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(2)]

    def _run(self) -> None:
        request = sentiment_pb2.AnalyzeSentimentRequest(texts=["a fine day", "awful"])
        for _ in range(5000):
            if self.stop.is_set():
                return
            try:
                self.versions.append(self.stub.Analyze(request, timeout=30).model.version)
            except grpc.RpcError as exc:
                self.errors.append(f"{exc.code().name}: {exc.details()}")

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)
        self.channel.close()


@pytest.fixture
def model_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "models"
    copy_as_version(SENTIMENT, root / "sentiment-bigru" / "1", "1")
    return root


def test_a_new_version_is_swapped_in_under_load_and_a_corrupt_one_never_serves(start_server, model_dir) -> None:
    server = start_server(model_dir=model_dir, extra_args=["--poll-seconds", "0.2"])
    with Load(server.target) as load:
        wait_until(lambda: len(load.versions) >= 5, timeout=60, what="first answers")
        publish_version(model_dir, "2")
        wait_until(lambda: "2" in load.versions[-4:], timeout=60, what="version 2 to serve")
        publish_version(model_dir, "3", corrupt=True)
        wait_until(lambda: "refusing model sentiment-bigru version 3" in server.log(), timeout=60, what="the refusal")
        count_at_refusal = len(load.versions)
        wait_until(lambda: len(load.versions) >= count_at_refusal + 10, timeout=60, what="answers after the refusal")
    assert load.errors == []
    assert set(load.versions) == {"1", "2"}
    assert load.versions[-1] == "2"
    first_two = load.versions.index("2")
    assert "1" not in load.versions[first_two + 4:], "version 1 kept answering long after the swap"

    with grpc.insecure_channel(server.target) as channel:
        (info,) = models_pb2_grpc.ModelsStub(channel).ListModels(models_pb2.ListModelsRequest(), timeout=10).models
    assert info.version == "2"
    (failure,) = info.load_failures
    assert failure.version == "3" and "checksum" in failure.reason and "model.onnx: sha256" in failure.reason
    assert "/" not in failure.reason.split("model.onnx")[0], "the reason holds no server path"
    assert metric(server, "seqserve_model_load_failures_total", model="sentiment-bigru") == 1
    assert metric(server, "seqserve_model_loads_total", model="sentiment-bigru", outcome="loaded") == 2
    assert metric(server, "seqserve_model_info", name="sentiment-bigru", version="2") == 1
    assert metric(server, "seqserve_model_info", name="sentiment-bigru", version="1") is None
    # Polled every 0.2 s, the unchanged corrupt version was tried once, not on every poll.
    assert server.log().count("refusing model sentiment-bigru version 3") == 1


def admin(channel: grpc.Channel) -> admin_pb2_grpc.AdminStub:
    return admin_pb2_grpc.AdminStub(channel)


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def test_admin_lists_loads_pins_and_unloads_versions_with_the_admin_token(
    start_server, model_dir, tmp_path: pathlib.Path
) -> None:
    publish_version(model_dir, "2")
    publish_version(model_dir, "3", corrupt=True)
    (tmp_path / "admin.token").write_text(ADMIN_TOKEN + "\n")
    (tmp_path / "api.token").write_text(API_TOKEN + "\n")
    server = start_server(model_dir=model_dir, extra_args=[
        "--admin-token-file", str(tmp_path / "admin.token"), "--api-token-file", str(tmp_path / "api.token"),
    ], wait=False)
    server.wait_until_serving()  # health needs no token
    with grpc.insecure_channel(server.target) as channel:
        stub = admin(channel)
        listed = stub.ListVersions(admin_pb2.ListVersionsRequest(name="sentiment-bigru"), metadata=bearer(ADMIN_TOKEN),
                                   timeout=10)
        # At start-up the newest version (3) fails its checksum, so the newest one that loads serves.
        assert {v.version: v.state for v in listed.versions} == {"1": "AVAILABLE", "2": "SERVING", "3": "FAILED"}
        loaded = stub.LoadModel(admin_pb2.LoadModelRequest(name="sentiment-bigru", version="1"),
                                metadata=bearer(ADMIN_TOKEN), timeout=60)
        assert loaded.model.version == "1"
        with pytest.raises(grpc.RpcError) as error:
            stub.LoadModel(admin_pb2.LoadModelRequest(name="sentiment-bigru", version="3"),
                           metadata=bearer(ADMIN_TOKEN), timeout=60)
        assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "version 1 keeps serving" in error.value.details()
        analyze = sentiment_pb2_grpc.SentimentStub(channel).Analyze
        request = sentiment_pb2.AnalyzeSentimentRequest(texts=["ok"])
        assert analyze(request, metadata=bearer(API_TOKEN), timeout=10).model.version == "1"
        loaded = stub.LoadModel(admin_pb2.LoadModelRequest(name="sentiment-bigru", version="2"),
                                metadata=bearer(ADMIN_TOKEN), timeout=60)
        assert analyze(request, metadata=bearer(API_TOKEN), timeout=10).model.version == "2"

        stub.UnloadModel(admin_pb2.UnloadModelRequest(name="sentiment-bigru"), metadata=bearer(ADMIN_TOKEN), timeout=10)
        with pytest.raises(grpc.RpcError) as error:
            analyze(request, metadata=bearer(API_TOKEN), timeout=10)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
        listed = stub.ListVersions(admin_pb2.ListVersionsRequest(), metadata=bearer(ADMIN_TOKEN), timeout=10)
        assert {v.version: v.state for v in listed.versions} == {"1": "UNLOADED", "2": "UNLOADED", "3": "FAILED"}

        # Refusals: no token, an unknown token, the API token on an admin call.
        for metadata, code in [
            ((), grpc.StatusCode.UNAUTHENTICATED),
            (bearer("not-the-token-at-all"), grpc.StatusCode.UNAUTHENTICATED),
            (bearer(API_TOKEN), grpc.StatusCode.PERMISSION_DENIED),
        ]:
            with pytest.raises(grpc.RpcError) as error:
                stub.ListVersions(admin_pb2.ListVersionsRequest(), metadata=metadata, timeout=10)
            assert error.value.code() == code
            assert ADMIN_TOKEN not in (error.value.details() or "")
        for metadata in [(), bearer("not-the-token-at-all")]:
            with pytest.raises(grpc.RpcError) as error:
                analyze(request, metadata=metadata, timeout=10)
            assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert ADMIN_TOKEN not in server.log() and API_TOKEN not in server.log()


def test_without_an_admin_token_admin_calls_are_refused(server) -> None:
    with grpc.insecure_channel(server.target) as channel, pytest.raises(grpc.RpcError) as error:
        admin(channel).ListVersions(admin_pb2.ListVersionsRequest(), timeout=10)
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_deleted_serving_folder_keeps_serving_and_models_and_admin_agree(
    start_server, model_dir, tmp_path: pathlib.Path
) -> None:
    (tmp_path / "admin.token").write_text(ADMIN_TOKEN + "\n")
    server = start_server(model_dir=model_dir, extra_args=[
        "--poll-seconds", "0.2", "--admin-token-file", str(tmp_path / "admin.token")])
    shutil.rmtree(model_dir / "sentiment-bigru" / "1")
    # The poll that sees the folder gone writes this line, once.
    warning = "model sentiment-bigru version 1: its folder"
    wait_until(lambda: warning in server.log(), timeout=60, what="the poll to notice the deleted folder")
    with grpc.insecure_channel(server.target) as channel:
        info = models_pb2_grpc.ModelsStub(channel).GetModel(models_pb2.GetModelRequest(name="sentiment-bigru"),
                                                            timeout=10)
        (listed,) = admin(channel).ListVersions(admin_pb2.ListVersionsRequest(name="sentiment-bigru"),
                                                metadata=bearer(ADMIN_TOKEN), timeout=10).versions
        analyzed = sentiment_pb2_grpc.SentimentStub(channel).Analyze(
            sentiment_pb2.AnalyzeSentimentRequest(texts=["still here"]), timeout=10)
    assert info.version == listed.version == analyzed.model.version == "1"
    assert listed.state == "SERVING" and "sentiment-bigru/1 was deleted" in listed.reason
    assert str(model_dir) not in listed.reason  # no server path reaches a client
    assert server.log().count(warning) == 1
    assert "WARNING" in next(line for line in server.log().splitlines() if warning in line)
