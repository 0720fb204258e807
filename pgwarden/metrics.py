"""What /metrics reports: plain counters on the hot path, turned into Prometheus metrics on scrape.

Incrementing a prometheus_client metric takes a lock and a few calls; a relay
counts bytes on every read. So the hot path adds to plain integers here and a
custom collector (`StatsCollector`) reads them when Prometheus scrapes.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Collection, Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from pgwarden import __version__, compiled
from pgwarden.counters import Histogram, StatementCounts
from pgwarden.traffic import Traffic

#: upper bounds (seconds) of pgwarden's own overhead per statement
#: upper bounds (seconds) of the time from an approval request to its decision
DECISION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
OVERHEAD_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0, 10.0)

_AUTH_REASONS = (
    ("malformed token", "malformed_token"),
    ("unknown key id", "unknown_key"),
    ("ExpiredSignatureError", "expired"),
    ("ImmatureSignatureError", "not_yet_valid"),
    ("InvalidSignatureError", "bad_signature"),
    ("InvalidAudienceError", "wrong_audience"),
    ("InvalidIssuerError", "wrong_issuer"),
    ("InvalidAlgorithmError", "bad_algorithm"),
    ("MissingRequiredClaimError", "missing_claim"),
    ("claim ", "bad_claims"),
    ("no policy", "no_policy"),
    ("no plugin accepted", "rejected"),
    ("authentication plugin failed", "plugin_error"),
    ("keys", "keys_unavailable"),
    ("pod", "pod_identity"),
    ("bearer token", "no_token"),  # the MCP endpoint: no Authorization: Bearer header
)


def auth_reason_class(reason: str) -> str:
    """A bounded label for an authentication failure (the full reason goes to the log and records)."""
    for needle, label in _AUTH_REASONS:
        if needle in reason:
            return label
    return "other"


class Stats:
    """Counters of one pgwarden, bumped by the core."""

    def __init__(self) -> None:
        self.connections = 0
        #: bytes read from clients and from upstream, counted by the pumps (compiled)
        self.traffic = Traffic()
        # The two counters of every statement, compiled (`pgwarden.counters`); their methods are
        # this object's own, so that bumping one is no interpreted call.
        #: (the compiled decision calls ``counts.count``, `statement`, natively)
        self.counts = StatementCounts()
        #: ``statement(action, kinds)``: counts a decided statement once under each of its kinds
        #: (``kinds`` hashable: a frozenset or a tuple), spread when read (`statements`, `verdicts`)
        self.statement: Callable[[str, Collection[str]], None] = self.counts.count
        self._overhead = Histogram(OVERHEAD_BUCKETS)
        #: ``overhead(seconds)``: pgwarden's own time on one execution, into its histogram
        self.overhead: Callable[[float], None] = self._overhead.add
        self.auth_failures: dict[str, int] = {}
        self.reload_failures = 0
        self.approvals: dict[str, int] = {}  # state (requested, approved, ...) -> count
        self.approvals_pending = 0
        self.decision_buckets = [0] * (len(DECISION_BUCKETS) + 1)
        self.decision_sum = 0.0
        self.notifier_failures = 0
        self.masked_values: dict[tuple[str, str, str], int] = {}  # (source, rule, strategy) -> values
        self.detections: dict[tuple[str, str], int] = {}  # (detector, column) -> hits
        self.results_refused: dict[str, int] = {}  # plugin -> results refused because it failed
        self.shadow_verdicts: dict[tuple[str, str, str], int] = {}  # (policy, rule, action) -> count

    @property
    def bytes_from_clients(self) -> int:
        return self.traffic.from_clients

    @property
    def bytes_from_upstream(self) -> int:
        return self.traffic.from_upstream

    def approval(self, state: str, waited_s: float | None = None) -> None:
        """An approval request changed state; ``waited_s``: since it was requested (a decision)."""
        self.approvals[state] = self.approvals.get(state, 0) + 1
        if waited_s is not None:
            self.decision_buckets[bisect.bisect_left(DECISION_BUCKETS, waited_s)] += 1
            self.decision_sum += waited_s

    @property
    def _decided(self) -> dict[tuple[str, Collection[str]], int]:
        """The counts by (verdict, set of kinds) not spread yet (bounded: the tests read it)."""
        self.counts.flush()
        return {(action, kinds): n for action, by_kinds in self.counts.decided.items()
                for kinds, n in by_kinds.items()}

    @property
    def statements(self) -> dict[tuple[str, str], int]:
        """(verdict, kind) -> statements: a statement counts under each of its kinds."""
        self.counts.spread()
        return self.counts.statements

    @property
    def verdicts(self) -> dict[str, int]:
        """verdict -> statements, each counted once."""
        self.counts.spread()
        return self.counts.verdicts

    @property
    def overhead_buckets(self) -> list[int]:
        return self._overhead.buckets

    @property
    def overhead_sum(self) -> float:
        return self._overhead.sum

    def masked(self, plans) -> None:
        """Counts what the masking plans (`pgwarden.masking`) of an execution's results did,
        by source column (never by alias), rule and strategy; detector hits by type and column."""
        values, detections = self.masked_values, self.detections
        for plan in plans:
            for (index, mask), output in zip(plan.masks, plan.outputs, strict=True):
                key = (output.source, output.rule, output.strategy)
                values[key] = values.get(key, 0) + plan.values.get(index, 0)
                for name, n in (mask.hits or {}).items():
                    detections[name, output.source] = detections.get((name, output.source), 0) + n

    def shadow(self, entries) -> None:
        """Counts shadow verdicts (`pgwarden.shadow`) by policy, rule (empty: a whole policy's
        verdict) and action (allow, approve, block, mask, limit, error)."""
        counts = self.shadow_verdicts
        for entry in entries:
            key = (str(entry["policy"]), str(entry["rule"] or ""), str(entry["action"]))
            counts[key] = counts.get(key, 0) + 1

    def auth_failure(self, reason: str) -> None:
        label = auth_reason_class(reason)
        self.auth_failures[label] = self.auth_failures.get(label, 0) + 1


class RecordingHealth(Protocol):
    """What /metrics reads of the recorder."""

    @property
    def sink_errors(self) -> int: ...

    @property
    def failure(self) -> str | None: ...


class MetricsSource(Protocol):
    """What /metrics reads of the running pgwarden (an `Application`), at scrape time only."""

    @property
    def stats(self) -> Stats: ...

    @property
    def connections(self) -> Collection[object]: ...

    @property
    def reloads(self) -> int: ...

    @property
    def recorder(self) -> RecordingHealth: ...


class StatsCollector(Collector):
    def __init__(self, app: MetricsSource) -> None:
        self.app = app
        self.build = compiled.build()  # fixed for the process's life

    def collect(self) -> Iterator:
        app, stats = self.app, self.app.stats
        c = CounterMetricFamily("pgwarden_connections", "Client connections accepted.")
        c.add_metric([], stats.connections)
        yield c
        g = GaugeMetricFamily("pgwarden_connections_open", "Client connections open now.")
        g.add_metric([], len(app.connections))
        yield g
        c = CounterMetricFamily("pgwarden_statements", "Statements decided, by verdict and kind (a statement "
                                "of several kinds counts under each).", labels=["verdict", "kind"])
        for (verdict, kind), n in sorted(stats.statements.items()):
            c.add_metric([verdict, kind], n)
        yield c
        c = CounterMetricFamily("pgwarden_verdicts", "Statements decided, by verdict (each counted once).",
                                labels=["verdict"])
        for verdict, n in sorted(stats.verdicts.items()):
            c.add_metric([verdict], n)
        yield c
        h = HistogramMetricFamily("pgwarden_overhead_seconds",
                                  "pgwarden's own time per execution: deciding before forwarding.")
        cumulative, buckets = 0, []
        for bound, n in zip(OVERHEAD_BUCKETS + (float("inf"),), stats.overhead_buckets):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        h.add_metric([], buckets, stats.overhead_sum)
        yield h
        c = CounterMetricFamily("pgwarden_bytes", "Bytes relayed, by direction.", labels=["direction"])
        c.add_metric(["from_client"], stats.bytes_from_clients)
        c.add_metric(["from_upstream"], stats.bytes_from_upstream)
        yield c
        c = CounterMetricFamily("pgwarden_auth_failures", "Refused logins, by reason.", labels=["reason"])
        for reason, n in sorted(stats.auth_failures.items()):
            c.add_metric([reason], n)
        yield c
        c = CounterMetricFamily("pgwarden_reloads", "Config reloads, by outcome.", labels=["outcome"])
        c.add_metric(["applied"], app.reloads)
        c.add_metric(["refused"], stats.reload_failures)
        yield c
        c = CounterMetricFamily("pgwarden_approvals", "Approval requests, by state reached (requested, "
                                "approved, denied, expired, withdrawn).", labels=["state"])
        for state, n in sorted(stats.approvals.items()):
            c.add_metric([state], n)
        yield c
        g = GaugeMetricFamily("pgwarden_approvals_pending", "Statements of this pgwarden waiting for approval now.")
        g.add_metric([], stats.approvals_pending)
        yield g
        h = HistogramMetricFamily("pgwarden_approval_decision_seconds",
                                  "Time from an approval request to its decision (approved or denied).")
        cumulative, buckets = 0, []
        for bound, n in zip(DECISION_BUCKETS + (float("inf"),), stats.decision_buckets):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        h.add_metric([], buckets, stats.decision_sum)
        yield h
        c = CounterMetricFamily("pgwarden_notifier_failures",
                                "Notifications (pgwarden_approval_requested) that failed.")
        c.add_metric([], stats.notifier_failures)
        yield c
        c = CounterMetricFamily("pgwarden_masked_values", "Values masked in results, by the source column "
                                "(schema.table.column), rule and strategy.", labels=["source", "rule", "strategy"])
        for (source, rule, strategy), n in sorted(stats.masked_values.items()):
            c.add_metric([source, rule, strategy], n)
        yield c
        c = CounterMetricFamily("pgwarden_mask_detections", "Values found by content detectors, by detector "
                                "and column (never the values).", labels=["detector", "column"])
        for (detector, column), n in sorted(stats.detections.items()):
            c.add_metric([detector, column], n)
        yield c
        c = CounterMetricFamily("pgwarden_results_refused", "Results refused because a masking plugin failed.",
                                labels=["plugin"])
        for plugin, n in sorted(stats.results_refused.items()):
            c.add_metric([plugin], n)
        yield c
        c = CounterMetricFamily("pgwarden_shadow_verdicts", "Verdicts of shadow rules and policies (recorded, "
                                "never enforced), by policy, rule (empty: a whole policy's) and action (allow, "
                                "approve, block, mask, limit, error).", labels=["policy", "rule", "action"])
        for (policy, rule, action), n in sorted(stats.shadow_verdicts.items()):
            c.add_metric([policy, rule, action], n)
        yield c
        c = CounterMetricFamily("pgwarden_record_sink_errors", "Record writes that failed.")
        c.add_metric([], app.recorder.sink_errors)
        yield c
        g = GaugeMetricFamily("pgwarden_build_info", "pgwarden's version, and whether its hot path runs "
                              "compiled (mypyc) or as pure Python (pgwarden --version).",
                              labels=["version", "compiled"])
        g.add_metric([__version__, self.build], 1)
        yield g
        g = GaugeMetricFamily("pgwarden_recording_failed", "1 while statements are refused because "
                              "records cannot be written.")
        g.add_metric([], 1 if app.recorder.failure else 0)
        yield g


def registry_for(app: MetricsSource) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(app))
    return registry
