"""Prometheus metrics of one running app, in a registry of its own.

Each :class:`Metrics` owns a ``CollectorRegistry``, so several apps in one
process (the tests) never share counters. Code that observes something calls
one small ``record_*`` method; label values come from short fixed sets
(route templates, OAuth error codes, poll verdicts, reasons), never from user
or client identifiers, so the number of series stays bounded.

Children of labelled metrics are cached in plain dicts: ``labels()`` takes a
lock and builds a tuple on every call, a dict lookup does neither.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector

__all__ = ["Metrics"]

FATIGUE_REASONS: Final = ("muted", "pending", "window")
USER_VERIFICATION_OUTCOMES: Final = (
    "verified",
    "refused",
    "clone_suspected",
    "missing",
    "would_require",
)

# Seconds. Requests: fast answers up to held long polls (at most 60 s).
REQUEST_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
PUSH_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
DECISION_BUCKETS: Final = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
PENDING_BUCKETS: Final = (0.0, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0)


class Metrics:
    """The app's counters and histograms, and the ``record_*`` calls that feed them."""

    def __init__(self, *, process: bool = True, poll_verdicts: Iterable[str] = ()) -> None:
        """``poll_verdicts``: the verdicts whose counters exist from the start, at 0."""
        self.registry = CollectorRegistry(auto_describe=True)
        if process:
            ProcessCollector(registry=self.registry)
        r = self.registry
        self.http_requests = Counter(
            "backchannel_http_requests",
            "HTTP requests by route template, status class and outcome "
            "(the OAuth error code, or ok / client_error / server_error / cancelled).",
            ["route", "status", "outcome"],
            registry=r,
        )
        self.http_duration = Histogram(
            "backchannel_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response, by route template.",
            ["route"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.token_polls = Counter(
            "backchannel_token_polls",
            "CIBA token polls by verdict (slow_down, lock, locked, abuse_denied: pacing strikes).",
            ["verdict"],
            registry=r,
        )
        self.requests_admitted = Counter(
            "backchannel_auth_requests_admitted",
            "Backchannel authentication requests admitted (each prompts the user's devices).",
            registry=r,
        )
        self.pending_at_admission = Histogram(
            "backchannel_user_pending_requests_at_admission",
            "Pending requests the user already had when a new one was admitted "
            "(counted only while FATIGUE_MAX_PENDING is on, and up to it).",
            buckets=PENDING_BUCKETS,
            registry=r,
        )
        self.policy_decisions = Counter(
            "backchannel_policy_decisions",
            "Policy rule evaluations at /bc-authorize: mode enforce (allow, deny) "
            "and report_only (would_deny).",
            ["mode", "outcome"],
            registry=r,
        )
        self.fatigue_refusals = Counter(
            "backchannel_fatigue_refusals",
            "Requests refused by push-fatigue limits: muted (not me), pending or window cap.",
            ["reason"],
            registry=r,
        )
        self.push_delivery = Histogram(
            "backchannel_push_delivery_seconds",
            "Time from queueing a Web Push message to the push service accepting it.",
            ["kind"],
            buckets=PUSH_BUCKETS,
            registry=r,
        )
        self.push_failures = Counter(
            "backchannel_push_failures",
            "Web Push attempts that did not deliver, by message kind and reason "
            "(transient: will be retried).",
            ["kind", "reason"],
            registry=r,
        )
        self.notifications = Counter(
            "backchannel_notifications",
            "Ping and push notification attempts to client endpoints, by mode and outcome "
            "(sent, retry, failed, given_up).",
            ["mode", "outcome"],
            registry=r,
        )
        self.notification_delivery = Histogram(
            "backchannel_notification_delivery_seconds",
            "Time from a request's end (decision, denial, expiry) to the client's endpoint "
            "accepting its notification.",
            ["mode"],
            buckets=PUSH_BUCKETS,
            registry=r,
        )
        self.decision_duration = Histogram(
            "backchannel_decision_seconds",
            "Time from a request's creation to the user's decision on it.",
            ["decision"],
            buckets=DECISION_BUCKETS,
            registry=r,
        )
        self.user_verification = Counter(
            "backchannel_user_verification",
            "Approvals and user verification (WebAuthn): verified, refused (an assertion "
            "that did not verify), clone_suspected (a sign counter that went back), missing "
            "(an approval without the verification it needed), would_require (an approval "
            "without verification that a report-only require-uv rule would have needed).",
            ["outcome"],
            registry=r,
        )
        self._http: dict[tuple[str, str, str], Counter] = {}
        self._durations: dict[str, Histogram] = {}
        self._polls = {verdict: self.token_polls.labels(verdict) for verdict in poll_verdicts}
        self._fatigue = {reason: self.fatigue_refusals.labels(reason) for reason in FATIGUE_REASONS}
        self._policy_allow = self.policy_decisions.labels("enforce", "allow")
        self._policy_deny = self.policy_decisions.labels("enforce", "deny")
        self._policy_would_deny = self.policy_decisions.labels("report_only", "would_deny")
        self._user_verification = {
            outcome: self.user_verification.labels(outcome)
            for outcome in USER_VERIFICATION_OUTCOMES
        }

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

    def record_request(self, route: str, status: str, outcome: str, seconds: float) -> None:
        """One finished HTTP request (called by the middleware)."""
        key = (route, status, outcome)
        counter = self._http.get(key)
        if counter is None:
            counter = self._http[key] = self.http_requests.labels(*key)
        counter.inc()
        duration = self._durations.get(route)
        if duration is None:
            duration = self._durations[route] = self.http_duration.labels(route)
        duration.observe(seconds)

    def record_poll(self, verdict: str) -> None:
        """A token poll was judged (backchannel/oauth/polling.py)."""
        counter = self._polls.get(verdict)
        if counter is None:
            counter = self._polls[verdict] = self.token_polls.labels(verdict)
        counter.inc()

    def record_admission(self, pending: int | None) -> None:
        """A request passed policy and fatigue limits; ``pending``: the user's pending
        requests before it, when they were counted."""
        self.requests_admitted.inc()
        if pending is not None:
            self.pending_at_admission.observe(pending)

    def record_policy_decision(self, *, allowed: bool, would_deny: bool) -> None:
        """Policy rules were evaluated for a request (only when there are rules)."""
        (self._policy_allow if allowed else self._policy_deny).inc()
        if would_deny:
            self._policy_would_deny.inc()

    def record_fatigue_refusal(self, reason: str) -> None:
        """A request was refused by a fatigue limit: ``muted``, ``pending`` or ``window``."""
        counter = self._fatigue.get(reason)
        if counter is None:
            counter = self._fatigue[reason] = self.fatigue_refusals.labels(reason)
        counter.inc()

    def record_user_verification(self, outcome: str) -> None:
        """An approval's user verification: one of ``USER_VERIFICATION_OUTCOMES``."""
        self._user_verification[outcome].inc()

    def record_push_delivered(self, kind: str, queued_at: datetime | None) -> None:
        """The push service accepted a message queued at ``queued_at`` (database clock)."""
        if queued_at is None:
            return
        self.push_delivery.labels(kind).observe(max(0.0, time.time() - queued_at.timestamp()))

    def record_push_failure(self, kind: str, reason: str) -> None:
        """A push attempt did not deliver: ``gone``, ``transient`` or a permanent reason."""
        self.push_failures.labels(kind, reason).inc()

    def record_notification(self, mode: str, outcome: str, due_at: datetime | None = None) -> None:
        """One notification attempt; ``due_at`` (database clock) times a delivered one."""
        self.notifications.labels(mode, outcome).inc()
        if outcome == "sent" and due_at is not None:
            elapsed = max(0.0, time.time() - due_at.timestamp())
            self.notification_delivery.labels(mode).observe(elapsed)

    def record_decision(self, decision: str, created_at: datetime, decided_at: datetime) -> None:
        """The user approved or denied a request."""
        seconds = max(0.0, (decided_at - created_at).total_seconds())
        self.decision_duration.labels(decision).observe(seconds)
