"""The plugin API is a product surface: pinned here, documented in docs/plugins.md."""

from __future__ import annotations

import inspect
from pathlib import Path

import pgwarden
from pgwarden import hookspecs

DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def test_public_names_are_exactly_these():
    assert sorted(pgwarden.__all__) == sorted(
        ["Identity", "Session", "Statement", "StoreKey", "Verdict", "__version__", "hookimpl"]
    )
    for name in pgwarden.__all__:
        assert getattr(pgwarden, name) is not None


def test_verdict_constructors():
    from pgwarden import Verdict

    assert Verdict.allow().action == "allow"
    b = Verdict.block("why", "hint", policy="p", rule="r")
    assert (b.action, b.reason, b.hint, b.policy, b.rule) == ("block", "why", "hint", "p", "r")
    assert Verdict.approve("human").action == "approve"
    assert Verdict.strictest([Verdict.allow(), None, Verdict.approve("a"), Verdict.allow()]).action == "approve"
    assert Verdict.strictest([Verdict.approve("a"), b]) is b


def test_statement_and_session_surface():
    from pgwarden import Identity, Session, Statement, StoreKey

    s = Statement("select 1; delete from t where id = 1")
    assert s.sql.startswith("select") and {"select", "delete"} <= s.kinds
    assert isinstance(s.fingerprint, str)
    for attr in ("tables", "writes", "functions", "has_where"):
        assert hasattr(s, attr)
    assert Statement("selec 1").kinds == frozenset({"unknown"})
    session = Session("id1", Identity("agent", frozenset({"g"})), "appdb")
    key = StoreKey[int]("n")
    session.store[key] = 3
    assert session.store[key] == 3 and session.store.get(StoreKey[int](), 0) == 0


def hook_signature(fn) -> str:
    ann = fn.__annotations__
    params = ", ".join(f"{p}: {ann[p]}" for p in inspect.signature(fn).parameters)
    return f"{fn.__name__}({params}) -> {ann.get('return')}"


def hooks():
    return [getattr(hookspecs, n) for n in dir(hookspecs) if n.startswith("pgwarden_")]


def test_every_hook_is_documented_with_its_signature():
    text = DOCS.read_text()
    missing = [hook_signature(fn) for fn in hooks() if f"### `{hook_signature(fn)}`" not in text]
    assert not missing, f"docs/plugins.md lacks: {missing}"


def test_every_hookspec_has_a_docstring_in_the_template():
    for fn in hooks():
        doc = fn.__doc__ or ""
        assert "versionadded" in doc, fn.__name__
        for param in inspect.signature(fn).parameters:
            assert f":param {param}:" in doc, (fn.__name__, param)


def test_the_shipped_pytest_plugin_uses_no_private_names():
    """A plugin author's tests load it: what it imports must stay where it is."""
    import ast

    from pgwarden.testing import pytest_plugin

    tree = ast.parse(Path(pytest_plugin.__file__).read_text())
    private = sorted(
        {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
         for alias in node.names if alias.name.startswith("_")}
        | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
           if node.module and any(part.startswith("_") and part != "__future__" for part in node.module.split("."))}
        | {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
           if node.attr.startswith("_") and not node.attr.startswith("__")}
    )
    assert private == []


def test_the_api_module_is_exactly_these_names_each_documented():
    from pgwarden import api

    assert sorted(api.__all__) == sorted([
        "ALLOW", "APPROVALS", "APPROVE", "AUTH_JWT", "BLOCK", "BUILTIN_DETECTORS", "LIMIT", "MASK",
        "MASK_STRATEGIES", "RECORDING", "STATEMENT_KINDS",
        "UPSTREAM", "ApprovalAnswer", "Approvals", "ApprovalRequest", "ApproveMatch", "AuthenticationFailed", "Column",
        "ColumnMask", "ConfigProblem",
        "ConfigSection", "Detector", "Identity", "JwtAuth", "Later", "LimitSpec", "MaskSpec", "Masker",
        "MessageMask", "Partial", "ResultColumn", "ResultShape",
        "PartialMask", "PgwardenDeprecationWarning", "Policy", "Reactor", "Record", "Recording", "RowDescription",
        "Rule", "RuleKind", "Sections", "Session", "SessionSummary", "StartupMessage", "Statement",
        "StatementMatch", "Store", "StoreKey", "StoredApproval", "Upstream", "Verdict", "When", "hookimpl",
    ])
    text = DOCS.read_text()
    assert [name for name in api.__all__ if f"`{name}`" not in text] == []
    for name in ("hookimpl", "Verdict", "Statement", "Identity", "Session", "StoreKey"):
        assert getattr(pgwarden, name) is getattr(api, name)


def test_hook_signatures_say_what_they_take_and_give():
    """No Any, no bare dict: every argument and answer is a class of pgwarden.api (or a builtin)."""
    import re

    for fn in hooks():
        signature = hook_signature(fn)
        assert not re.search(r"\b(Any|dict)\b", signature), signature


def test_what_hooks_receive_is_frozen():
    import attrs

    from pgwarden import api

    classes = [getattr(api, n) for n in api.__all__ if isinstance(getattr(api, n), type)
               and attrs.has(getattr(api, n))]
    assert {c.__name__ for c in classes} >= {"Verdict", "Identity", "Session", "SessionSummary", "Rule", "Policy",
                                             "ApprovalRequest", "RowDescription", "StartupMessage", "RuleKind"}
    mutable = [c.__name__ for c in classes if c.__setattr__ is object.__setattr__]
    assert mutable == []
