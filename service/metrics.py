"""Prometheus metrics (prometheus-client), exposed at GET /metrics."""
from prometheus_client import Counter, Gauge, Histogram

# route: the full route template (/v1/thresholds, /v1/jobs/{job_id}; service.routemap), or
# "unmatched", so each endpoint has one label however it was answered
REQUESTS = Counter("staircase_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("staircase_request_seconds", "HTTP request latency", ["route"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                             30, 60, 120))
CACHE_HITS = Counter("staircase_cache_hits_total", "Answers served from the cache", ["kind"])
CACHE_MISSES = Counter("staircase_cache_misses_total", "Requests not found in the cache", ["kind"])
CACHE_CORRUPT = Counter("staircase_cache_corrupt_total", "Corrupt or foreign entries ignored", ["kind"])
COMPUTATIONS = Counter("staircase_computations_total", "Computations run by the solvers",
                       ["kind", "outcome"])
COMPUTE_SECONDS = Histogram("staircase_computation_seconds", "Solver wall time", ["kind"],
                            buckets=(0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600))
# the cost estimate against the time taken (service.cost): a ratio far from 1 asks for new constants
ESTIMATE_RATIO = Histogram("staircase_estimate_ratio", "Computation seconds / estimated seconds",
                           ["kind", "lane"], buckets=(0.1, 0.25, 0.5, 1, 2, 4, 10, 100))
QUEUE_SECONDS = Histogram("staircase_queue_seconds", "Seconds a computation waited for a slot",
                          ["lane"], buckets=(0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800))
JOBS_ACTIVE = Gauge("staircase_jobs_active", "Jobs queued or running in this process")
STORE_AVAILABLE = Gauge("staircase_store_available", "1 when the cache store answers, 0 when degraded")
STORE_AVAILABLE.set(1)
