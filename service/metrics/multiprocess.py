"""The one /metrics of a server of several worker processes (--workers N): the workers' series summed.

Each worker writes its metrics into prometheus-client's multiprocess files (PROMETHEUS_MULTIPROC_DIR, a
fresh directory per server start); the supervisor reads them all at every scrape (MultiProcessCollector)
and adds what only it knows: how many workers are alive, how many were restarted, and the process
metrics (memory, CPU, open files) of the whole group, which one process's own figures would understate.
"""

from __future__ import annotations

import functools
import pathlib
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

# Summed over the group: what the dashboard's memory and CPU panels and the memory alerts read.
_SUMMED = {"process_virtual_memory_bytes", "process_resident_memory_bytes", "process_cpu_seconds_total",
           "process_open_fds"}


class ProcessGroupCollector(Collector):
    """process_* metrics of the supervisor and its workers together (names as ProcessCollector's)."""

    def __init__(self, pids: Callable[[], Sequence[int]]) -> None:
        self._pids = pids

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        totals: dict[str, float] = {}
        for pid in self._pids():
            for family in ProcessCollector(pid=functools.partial(int, pid), registry=None).collect():
                for sample in family.samples:
                    if sample.name in _SUMMED:
                        families.setdefault(sample.name, family)
                        totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
        for name, family in families.items():
            metric = Metric(family.name, family.documentation + " (all server processes)", family.type)
            metric.add_sample(name, {}, totals[name])
            yield metric


class SupervisorMetrics:
    """The registry the supervisor serves: every worker's metrics summed, and the workers themselves."""

    def __init__(self, multiprocess_dir: pathlib.Path, pids: Callable[[], Sequence[int]]) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        MultiProcessCollector(self.registry, path=str(multiprocess_dir))
        self.registry.register(ProcessGroupCollector(pids))
        self.workers_alive = Gauge(
            "seqserve_workers_alive", "Server worker processes running (--workers); below the configured "
            "count while a crashed worker restarts.", registry=self.registry,
        )
        self.workers_configured = Gauge(
            "seqserve_workers_configured", "Server worker processes configured (--workers).", registry=self.registry,
        )
        self.worker_restarts = Counter(
            "seqserve_worker_restarts", "Workers restarted after they died while serving, by exit reason.",
            ["reason"], registry=self.registry,
        )

    def worker_exited(self, pid: int) -> None:
        """Drop a dead worker's live gauges (in flight, queue depth) from the sum; its counters stay."""
        mark_process_dead(pid, str(self.multiprocess_dir))
