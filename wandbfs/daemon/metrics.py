"""Prometheus metrics for one mount (opt-in: ``--metrics-addr 127.0.0.1:PORT``).

Counters that the parts already keep (fetcher, evictor, lineage, catalog, the FUSE layer)
are read at scrape time by a collector, so the data path pays nothing for them; only the
latency histograms are observed as things happen. Each mount has its own registry (no
process-global state), served by prometheus-client's own HTTP server on the address asked
for - loopback unless the operator says otherwise.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

__all__ = ["Metrics", "parse_addr"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def parse_addr(text: str) -> tuple[str, int]:
    """``127.0.0.1:9400`` / ``:9400`` (loopback) / ``[::1]:9400`` -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not an address: {text!r} (expected HOST:PORT, e.g. 127.0.0.1:9400)")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


class _Snapshot(Collector):
    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot()
        by_source = CounterMetricFamily("wandbfs_read_bytes", "Bytes served to readers, by source",
                                        labels=["source"])
        by_source.add_metric(["cache"], s["bytes_from_cache"])
        by_source.add_metric(["wandb"], s["bytes_from_wandb"])
        yield by_source
        req = CounterMetricFamily("wandbfs_requests", "Requests to W&B, by kind", labels=["kind"])
        req.add_metric(["graphql"], s["wandb_calls"])
        req.add_metric(["download"], s["downloads"] + s["uncached_files"])
        yield req
        yield CounterMetricFamily("wandbfs_downloaded_bytes", "Bytes downloaded from storage",
                                  value=s["bytes_downloaded"])
        fetched = CounterMetricFamily("wandbfs_fetched_bytes", "Bytes brought into the local cache, by where "
                                      "they came from", labels=["source"])
        fetched.add_metric(["wandb"], s["bytes_downloaded"])
        fetched.add_metric(["shared"], s.get("bytes_from_shared", 0))
        yield fetched
        yield CounterMetricFamily("wandbfs_shared_published_bytes", "Bytes this host published to the shared "
                                  "cache tier", value=s.get("bytes_to_shared", 0))
        yield CounterMetricFamily("wandbfs_cache_hits", "Objects found in the cache", value=s["cache_hits"])
        yield CounterMetricFamily("wandbfs_cache_misses", "Objects that had to be downloaded",
                                  value=s["cache_misses"])
        yield CounterMetricFamily("wandbfs_evictions", "Objects evicted from the cache", value=s["evictions"])
        yield CounterMetricFamily("wandbfs_evicted_bytes", "Bytes evicted from the cache", value=s["bytes_evicted"])
        yield CounterMetricFamily("wandbfs_download_retries", "Ranged GETs retried", value=s["retries"])
        yield CounterMetricFamily("wandbfs_digest_failures", "Downloads that failed their digest",
                                  value=s["digest_failures"])
        errs = CounterMetricFamily("wandbfs_errors", "Errors returned to readers, by errno", labels=["errno"])
        for name, n in sorted(s["errors"].items()):
            errs.add_metric([name], n)
        yield errs
        yield GaugeMetricFamily("wandbfs_downloads_in_flight", "Downloads running", value=s["downloads_in_flight"])
        yield GaugeMetricFamily("wandbfs_open_files", "Open file handles", value=s["open_files"])
        yield GaugeMetricFamily("wandbfs_inodes", "Inodes the kernel may hold", value=s["inodes"])
        yield GaugeMetricFamily("wandbfs_inode_nodes", "Inodes with a node object in the daemon (the rest are "
                                "files of huge folders, kept in arrays)", value=s["inode_nodes"])
        yield GaugeMetricFamily("wandbfs_lineage_pending", "Artifact uses not yet recorded in W&B",
                                value=s["lineage_pending"] or 0)
        yield CounterMetricFamily("wandbfs_lineage_recorded", "Artifact uses recorded in W&B",
                                  value=s["lineage_recorded"] or 0)
        yield GaugeMetricFamily("wandbfs_wandb_offline", "1 while W&B is unreachable",
                                value=0 if s["wandb_offline_since_s"] is None else 1)
        yield GaugeMetricFamily("wandbfs_uptime_seconds", "Seconds since the mount started", value=s["uptime_s"])


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.read_latency = Histogram("wandbfs_read_seconds", "Latency of reads that had to wait for a download",
                                      buckets=LATENCY_BUCKETS, registry=self.registry)
        self.ttfb = Histogram("wandbfs_download_first_byte_seconds", "Time from a download's start to its "
                              "first byte", buckets=LATENCY_BUCKETS, registry=self.registry)
        self.wandb_call = Histogram("wandbfs_wandb_call_seconds", "Latency of W&B API calls (GraphQL, through "
                                    "the SDK)", ["call"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self._server: Any = None

    def watch(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.registry.register(_Snapshot(snapshot))

    def observe_call(self, name: str, seconds: float) -> None:
        self.wandb_call.labels(name).observe(seconds)

    def serve(self, addr: str) -> tuple[str, int]:
        host, port = parse_addr(addr)
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        bound = server.server_address
        log.info("metrics on http://%s:%d/metrics", host, bound[1])
        return host, int(bound[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
