"""What an `approve` rule costs a SELECT: `PluginHost.check` with the block plugin alone, with the
approve plugin loaded but no approve rule, and with an approve rule on writes (docs/approvals.md).

    .venv/bin/python bench/approve_check.py
"""
import timeit

from pgwarden.config import _CONVERTER
from pgwarden.identity import Identity
from pgwarden.plugins import PluginHost
from pgwarden.policy.model import Policy
from pgwarden.session import Session
from pgwarden.sql.cache import StatementCache
from pgwarden.sql.context import default_context
from pgwarden_plugins.approve import Approving
from pgwarden_plugins.block import Blocking


def case(load_approve: bool, with_rule: bool) -> float:
    rules = [{"name": "no-ddl", "block": {"statements": ["ddl"]}}]
    if with_rule:
        rules.append({"name": "writes", "approve": {"statements": ["insert", "update", "delete"]}})
    plugins = [("block", Blocking())] + ([("approve", Approving())] if load_approve else [])
    host = PluginHost(None, None, plugins, only=())
    pol = host.read_policies((_CONVERTER.structure({"name": "p", "default": "allow", "rules": rules}, Policy),))
    session = Session("s", Identity("a"), "db", policies=pol)
    st = StatementCache().get("select * from t where id = 1", default_context())
    assert st.analysis is not None  # analysed before timing
    host.check(st, session)
    n = 50000
    return min(timeit.repeat(lambda: host.check(st, session), number=n, repeat=7)) / n * 1e6

def main() -> None:
    for load_approve, with_rule in [(False, False), (True, False), (True, True)]:
        label = "block only" if not load_approve else ("approve, no rule" if not with_rule else "approve rule")
        print(f"{label:<18} {case(load_approve, with_rule):.2f} us per check")


if __name__ == "__main__":
    main()
