"""The server's Prometheus metrics, in a registry of their own.

A dedicated CollectorRegistry (not the process-wide default) keeps the exposition to exactly these
series and lets tests build as many independent instances as they like.

Under --workers N each worker process writes these into prometheus-client's multiprocess files
(PROMETHEUS_MULTIPROC_DIR) and the supervisor serves their sum (service/metrics/multiprocess.py). Counters
and histograms sum by themselves; each gauge says how its workers' values combine (multiprocess_mode,
ignored in a single process).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from service.model.loaded_model import LoadedModel
from service.model.manifest import sha256_file
from service.model.timing import StageTimings

# Request latency on this hardware runs from ~1 ms (validation errors) to seconds (64 long texts),
# so the buckets start finer than prometheus-client's default 5 ms.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
RATIO_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServingMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, worker: int | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        # `version` is the version that answered ("" when no model ran: a refusal before the model was
        # resolved, or a Models/Admin call), as on the stage histograms, so a rollout's two versions
        # can be told apart; the rules and dashboard sum it away where they mean the method as a whole.
        self.requests = Counter(
            "seqserve_requests", "Calls answered, by final gRPC status code.",
            ["service", "method", "model", "version", "code"], registry=self.registry,
        )
        self.request_duration = Histogram(
            "seqserve_request_duration_seconds", "Time from a call's arrival to its answer.",
            ["service", "method", "model", "version"], buckets=REQUEST_BUCKETS, registry=self.registry,
        )
        self.stage_duration = Histogram(
            "seqserve_stage_duration_seconds", "Time spent in one pipeline stage of one call.",
            ["model", "version", "stage"], buckets=STAGE_BUCKETS, registry=self.registry,
        )
        self.in_flight = Gauge(
            "seqserve_requests_in_flight", "Calls being handled right now.",
            ["service", "method"], registry=self.registry, multiprocess_mode="livesum",
        )
        self.model_info = Gauge(
            "seqserve_model_info", "1 for every loaded model version; the labels are the facts.",
            # "max": 1 while any worker serves the version (each worker loads and swaps on its own).
            ["name", "version", "task", "sha256"], registry=self.registry, multiprocess_mode="max",
        )
        self.load_failures = Counter(
            "seqserve_model_load_failures", "Model versions refused at load time.",
            ["model"], registry=self.registry,
        )
        self.loads = Counter(
            "seqserve_model_loads", "Model version loads attempted, by outcome (loaded or failed).",
            ["model", "outcome"], registry=self.registry,
        )
        self.load_duration = Histogram(
            "seqserve_model_load_duration_seconds", "Verify + session + warm-up time of one version.",
            ["model"], buckets=LOAD_BUCKETS, registry=self.registry,
        )
        self.queue_duration = Histogram(
            "seqserve_queue_duration_seconds", "Time a call waited in its model's batching queue.",
            ["model", "version"], buckets=STAGE_BUCKETS, registry=self.registry,
        )
        self.batch_size = Histogram(
            "seqserve_batch_size_texts", "Texts per batch run by the dynamic batcher.",
            ["model"], buckets=BATCH_SIZE_BUCKETS, registry=self.registry,
        )
        self.padding_ratio = Histogram(
            "seqserve_batch_padding_ratio", "Share of a batch tensor that is padding.",
            ["model"], buckets=RATIO_BUCKETS, registry=self.registry,
        )
        self.queue_depth = Gauge(
            "seqserve_queue_depth_texts", "Texts waiting in a model's batching queue.",
            ["model"], registry=self.registry, multiprocess_mode="livesum",
        )
        self.batch_rejects = Counter(
            "seqserve_batch_rejects", "Calls refused or dropped by the batcher (queue_full, deadline, cancelled).",
            ["model", "reason"], registry=self.registry,
        )
        # process_resident_memory_bytes, CPU seconds, open fds: in this registry, not the global one.
        ProcessCollector(registry=self.registry)
        # Under --workers N: calls per worker, to see how the kernel spread connections (SO_REUSEPORT
        # balances connections, not calls); a single-process server has no such series.
        self.worker_calls = None if worker is None else Counter(
            "seqserve_worker_calls", "Calls answered by each worker process (--workers).",
            ["worker"], registry=self.registry,
        ).labels(str(worker))
        # The per-call series' children by label values. prometheus-client's labels() validates, locks and
        # looks up on every call; the label sets are bounded (model names only once resolved, code names,
        # stage names), and these series are never removed, so a child found once stays the live one.
        self._call_series: dict[tuple[str, str, str, str, str], tuple[Counter, Histogram]] = {}
        self._stage_series: dict[tuple[str, str, str], Histogram] = {}
        self._queue_series: dict[tuple[str, str], Histogram] = {}

    def observe_call(self, service: str, method: str, model: str, code: str, seconds: float,
                     version: str = "") -> None:
        """One answered call; `version` stays "" for calls refused before any model answered."""
        key = (service, method, model, version, code)
        series = self._call_series.get(key)
        if series is None:
            series = (self.requests.labels(service, method, model, version, code),
                      self.request_duration.labels(service, method, model, version))
            self._call_series[key] = series
        series[0].inc()
        series[1].observe(seconds)
        if self.worker_calls is not None:
            self.worker_calls.inc()

    def observe_stages(self, model: LoadedModel, timings: StageTimings) -> None:
        for stage, seconds in timings.seconds.items():
            key = (model.name, model.version, stage)
            child = self._stage_series.get(key)
            if child is None:
                child = self._stage_series[key] = self.stage_duration.labels(*key)
            child.observe(seconds)

    def observe_queue(self, model: LoadedModel, seconds: float) -> None:
        key = (model.name, model.version)
        child = self._queue_series.get(key)
        if child is None:
            child = self._queue_series[key] = self.queue_duration.labels(*key)
        child.observe(seconds)

    def record_unloaded_model(self, model: LoadedModel) -> None:
        for labels in list(self.model_info._metrics):  # every series of that name and version
            if labels[0] == model.name and labels[1] == model.version:
                # A worker's multiprocess file keeps a removed series' last value: 0 first, so the
                # workers' max drops to 0 once none of them serves the version.
                self.model_info.labels(*labels).set(0)
                self.model_info.remove(*labels)

    def record_loaded_model(self, model: LoadedModel) -> None:
        # The hash of the graph actually loaded (verified against the manifest at load), so a
        # dashboard can tell two deployments of "version 1" apart if they ever differ.
        onnx_file = model.manifest.spec.onnx.file
        sha256 = model.manifest.files.get(onnx_file) or sha256_file(model.manifest.path(onnx_file))
        self.model_info.labels(model.name, model.version, model.task, sha256).set(1)

    def record_load_failure(self, model: str) -> None:
        self.load_failures.labels(model).inc()
