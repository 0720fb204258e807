"""A statement decided as the proxy decides it, without a database: `explain`, `replay` and `test`.

One path for the three commands, so that what they say is what `pgwarden run` would do: the
policies the identity meets (none: the connection is refused), the core's own limits first
(`limits.refusal`: no plugin lifts them), then the loaded plugins through the guarded
`PluginHost.check` (a plugin that raises blocks), and what the masking plugins would do to the
rows (`explain.statement_masks`, the proxy's own `result_masks` path on a RowDescription made
from the statement's lineage).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
from twisted.internet.defer import Deferred

from pgwarden import limits as core_limits
from pgwarden.explain import StatementMasks, statement_masks
from pgwarden.policy import policies_for
from pgwarden.session import Session
from pgwarden.sql import Statement
from pgwarden.verdict import Verdict

if TYPE_CHECKING:
    from pgwarden.catalog.model import Catalog
    from pgwarden.config import Config
    from pgwarden.identity import Identity
    from pgwarden.plugins import PluginHost
    from pgwarden.sql.context import SqlContext

#: The verdict's rule when no policy matches the identity (the proxy refuses the login).
NO_POLICY_RULE = "(connection refused, SQLSTATE 28000)"
#: The verdict's rule when pgwarden's own analysis of the text failed (the proxy refuses it).
ANALYSIS_FAILED = "(analysis failed)"


@attrs.frozen
class MaskedOutput:
    """One output the masking plugins would mask: as the agent sees it, its source, the rule."""

    column: str
    source: str | None
    rule: str | None
    strategy: str | None


@attrs.frozen
class Decision:
    """The verdict on one SQL string, and what masking would do to its rows."""

    statement: Statement
    verdict: Verdict
    policies: tuple[str, ...] = ()
    masks: tuple[StatementMasks, ...] = ()
    #: what each masking plugin's own check refuses (for `explain`): (plugin, verdict)
    masking_refusals: tuple[tuple[str, Verdict], ...] = ()

    @property
    def masked(self) -> tuple[MaskedOutput, ...]:
        """Every output masked, over the statements of the string, in order."""
        return tuple(MaskedOutput(o.output, o.source, o.rule, o.strategy)
                     for one in self.masks for o in one.outputs or () if o.rule is not None)


def settled(answer: Verdict | Deferred[Verdict]) -> Verdict:
    """A plugin host's answer, which a command cannot wait for: a Deferred not fired at once
    (an approval store, a plugin asking elsewhere) blocks, as the proxy would on a failure."""
    if isinstance(answer, Deferred):
        got: list[object] = []
        answer.addBoth(got.append)
        answer = got[0] if got else None  # type: ignore[assignment]
    if isinstance(answer, Verdict):
        return answer
    return Verdict.block("no verdict: a plugin failed or did not decide at once", rule="(undecided)")


def offline_session(config: Config, identity: Identity, session_id: str = "offline") -> Session:
    """A session for ``identity`` under ``config``'s policies: what the plugins keep per session
    (SQL-level PREPAREs, say) lives in its store, so a session's statements go through one."""
    return Session(session_id, identity, config.upstream.database, policies=policies_for(identity, config.policies))


def decide(config: Config, host: PluginHost, identity: Identity, sql: str, context: SqlContext | None,
           catalog: Catalog, *, masking: bool = True, session: Session | None = None) -> Decision:
    """The proxy's verdict on ``sql`` for ``identity`` in ``context`` (its catalog, search_path
    and lexer settings), and, with ``masking``, what the masking plugins do to its rows.
    ``session``: the `offline_session` the statement belongs to (by default a new one)."""
    statement = Statement(sql, context=context)
    if session is None:
        session = offline_session(config, identity)
    policies = session.policies
    names = tuple(p.name for p in policies)
    try:
        analysis = statement.analysis
        statement.lineage  # noqa: B018 - computed here so that its failure is caught here
    except Exception as e:  # noqa: BLE001 - pgwarden's own fault: the proxy refuses such a statement
        return Decision(statement, Verdict.block(f"the analysis failed ({type(e).__name__}: {e})",
                                                 rule=ANALYSIS_FAILED), names)
    if not policies:
        return Decision(statement, Verdict.block("no policy for this identity", rule=NO_POLICY_RULE))
    read_only = core_limits.read_only_policy(policies) is not None
    limits = core_limits.session_limits(policies, read_only=read_only,
                                        startup_timeout_ms=core_limits.statement_timeout_ms(policies))
    refused = core_limits.refusal(analysis, limits)
    verdict = refused if refused is not None else settled(host.check(statement, session))
    if not masking:
        return Decision(statement, verdict, names)
    masks = tuple(statement_masks(host, statement, session, catalog))
    return Decision(statement, verdict, names, masks, tuple(host.masking_refusals(statement, session)))
