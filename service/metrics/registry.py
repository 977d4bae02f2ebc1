"""The server's Prometheus metrics, in a registry of their own.

A dedicated CollectorRegistry (not the process-wide default) keeps the exposition to exactly these
series and lets tests build as many independent instances as they like.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.pipelines.timing import StageTimings
from service.repository.manifest import sha256_file
from service.repository.repository import LoadedModel

# Request latency on this hardware runs from ~1 ms (validation errors) to seconds (64 long texts),
# so the buckets start finer than prometheus-client's default 5 ms.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServingMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "seqserve_requests", "Calls answered, by final gRPC status code.",
            ["service", "method", "model", "code"], registry=self.registry,
        )
        self.request_duration = Histogram(
            "seqserve_request_duration_seconds", "Time from a call's arrival to its answer.",
            ["service", "method", "model"], buckets=REQUEST_BUCKETS, registry=self.registry,
        )
        self.stage_duration = Histogram(
            "seqserve_stage_duration_seconds", "Time spent in one pipeline stage of one call.",
            ["model", "version", "stage"], buckets=STAGE_BUCKETS, registry=self.registry,
        )
        self.in_flight = Gauge(
            "seqserve_requests_in_flight", "Calls being handled right now.",
            ["service", "method"], registry=self.registry,
        )
        self.model_info = Gauge(
            "seqserve_model_info", "1 for every loaded model version; the labels are the facts.",
            ["name", "version", "task", "sha256"], registry=self.registry,
        )
        self.load_failures = Counter(
            "seqserve_model_load_failures", "Model versions refused at load time.",
            ["model"], registry=self.registry,
        )

    def observe_call(self, service: str, method: str, model: str, code: str, seconds: float) -> None:
        self.requests.labels(service, method, model, code).inc()
        self.request_duration.labels(service, method, model).observe(seconds)

    def observe_stages(self, model: LoadedModel, timings: StageTimings) -> None:
        for stage, seconds in timings.seconds.items():
            self.stage_duration.labels(model.name, model.version, stage).observe(seconds)

    def record_loaded_model(self, model: LoadedModel) -> None:
        # The hash of the graph actually loaded (verified against the manifest at load), so a
        # dashboard can tell two deployments of "version 1" apart if they ever differ.
        onnx_file = model.manifest.data["onnx"].get("file", "model.onnx")
        sha256 = model.manifest.files.get(onnx_file) or sha256_file(model.manifest.path(onnx_file))
        self.model_info.labels(model.name, model.version, model.task, sha256).set(1)

    def record_load_failure(self, model: str) -> None:
        self.load_failures.labels(model).inc()
