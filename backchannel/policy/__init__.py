"""Governance decisions at /bc-authorize (docs/policy.md).

- ``rules``: the rule model and its validation;
- ``evaluate``: pure evaluation of one request's facts against the rules;
- ``document``: policy files (TOML or JSON) with line-precise errors;
- ``store``: the per-replica rule cache and the only way rules change;
- ``fatigue``: push-fatigue caps and what "this wasn't me" does;
- ``admission``: both applied to a request before it is stored.

Only the pure modules are re-exported here, so that the database layer can
import the rule model without a cycle.
"""

from backchannel.policy.evaluate import PolicyDecision, RequestFacts, evaluate
from backchannel.policy.rules import Conditions, PolicyError, Problem, Rule, TimeWindow

__all__ = [
    "Conditions",
    "PolicyDecision",
    "PolicyError",
    "Problem",
    "RequestFacts",
    "Rule",
    "TimeWindow",
    "evaluate",
]
