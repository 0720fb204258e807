"""The policy model: who a policy applies to, and its rules."""

from pgwarden.policy.model import Policy, Rule, When, matching_policies, policies_for

__all__ = ["Policy", "Rule", "When", "matching_policies", "policies_for"]
