"""Reading the server's plan (`pgwarden.catalog.plans`), and comparing it with lineage
(`pgwarden_plugins.mask.plans`). The plans are as PostgreSQL 15 prints them (EXPLAIN (VERBOSE,
COSTS OFF, FORMAT JSON)); tests/e2e/test_mask_plans.py asks a real server."""

from __future__ import annotations

from pgwarden.catalog.planner import PlanRefused, PlanUnavailable
from pgwarden.catalog.plans import BUILTIN_AGGREGATES, INDEX_KEYS, RELATION_INDEXES, PlanUses, plan_uses
from pgwarden.config import structure_config
from pgwarden.plugins import PluginHost
from pgwarden.sql.lineage import Lineage, OracleUse, Output, Source
from pgwarden.verdict import Verdict
from pgwarden_plugins.mask.plans import _compare
from pgwarden_plugins.mask.rules import SessionRules

COLUMNS = {("public", "users"): ["id", "name", "ssn"], ("public", "orders"): ["id", "user_id"],
           ("public", "Odd Name"): ["Weird Col"]}


def uses(plan: dict) -> PlanUses:
    return plan_uses([{"Plan": plan}], lambda s, t: COLUMNS.get((s, t)))


def scan(alias: str, output: list[str], table: str = "users", **more) -> dict:
    return {"Node Type": "Seq Scan", "Relation Name": table, "Schema": "public", "Alias": alias,
            "Output": output, **more}


def src(column: str, table: str = "users") -> Source:
    return Source("public", table, column)


def test_a_filter_is_read_and_tested_an_output_only_read():
    got = uses(scan("u", ["u.id"], Filter="(u.ssn ~~ '1%'::text)"))
    assert got.reads == {src("id"), src("ssn")} and got.tests == {src("ssn")}


def test_a_physical_target_list_below_says_nothing_but_at_the_top_it_is_the_result():
    child = scan("x", ["x.id", "x.name", "x.ssn"], **{"Parent Relationship": "Outer"})
    hashed = {"Node Type": "Hash", "Parent Relationship": "Inner", "Output": ["x.id", "x.name", "x.ssn"],
              "Plans": [child]}
    top = {"Node Type": "Hash Join", "Output": ["x.id"], "Hash Cond": "(o.user_id = x.id)",
           "Plans": [scan("o", ["o.user_id"], "orders", **{"Parent Relationship": "Outer"}), hashed]}
    got = uses(top)
    assert got.reads == {src("id"), src("user_id", "orders")} and src("ssn") not in got.reads
    assert uses(scan("x", ["x.id", "x.name", "x.ssn"])).reads == {src("id"), src("name"), src("ssn")}
    # a sub-select's result, a CTE's, is not skipped either
    initplan = dict(child, **{"Parent Relationship": "InitPlan", "Subplan Name": "CTE w"})
    assert src("ssn") in uses({"Node Type": "Result", "Output": ["1"], "Plans": [initplan]}).reads


def test_whole_rows_unqualified_names_and_quoted_ones():
    assert uses(scan("u", ["row_to_json(u.*)"])).reads == {src("id"), src("name"), src("ssn")}
    # one range table entry: EXPLAIN leaves the output unqualified; a function's or a type's name is no column
    got = uses(scan("u", ["ssn", "name(id)", "(id)::name"]))
    assert got.reads == {src("ssn"), src("id")}
    odd = scan('"Odd Name"', ['"Odd Name"."Weird Col"'], "Odd Name", Alias="Odd Name")
    assert uses(odd).reads == {Source("public", "Odd Name", "Weird Col")}


def test_names_of_ctes_and_sub_selects_and_constants_are_not_columns():
    cte = {"Node Type": "CTE Scan", "CTE Name": "users", "Alias": "users", "Output": ["users.ssn"],
           "Filter": "(users.ssn = 'u.ssn'::text)"}
    assert uses(cte) == PlanUses(frozenset(), frozenset(), outputs=(frozenset(),))


def test_a_writes_target_tables_are_names_not_whole_rows():
    # UPDATE of a table with inheritance children lists them: their names are no expressions
    update = {"Node Type": "ModifyTable", "Operation": "Update", "Relation Name": "users", "Schema": "public",
              "Alias": "users", "Target Tables": [
                  {"Relation Name": "users", "Schema": "public", "Alias": "users"},
                  {"Relation Name": "users", "Schema": "public", "Alias": "users_1"}],
              "Plans": [scan("users_1", ["'x'::text", "users_1.ctid"], **{"Parent Relationship": "Outer"},
                             Filter="(users_1.id = 1)")]}
    got = uses(update)
    assert got.reads == {src("id"), src("ctid")} and got.tests == {src("id")}


def test_a_function_in_from_is_read_not_tested():
    fn = {"Node Type": "Nested Loop", "Output": ["k.k"], "Plans": [
        scan("u", ["u.*"], **{"Parent Relationship": "Outer"}),
        {"Node Type": "Function Scan", "Parent Relationship": "Inner", "Alias": "k", "Output": ["k.k"],
         "Function Call": "jsonb_object_keys(to_jsonb(u.*))"}]}
    got = uses(fn)
    assert src("ssn") in got.reads and not got.tests


def test_what_the_scanner_cannot_read_names_every_column():
    got = uses(scan("u", ["u.id"], Filter="(u.id = 'unterminated)"))
    assert src("ssn") in got.tests


def _rules() -> SessionRules:
    config = structure_config({
        "upstream": {"host": "h", "port": 5432, "database": "d", "user": "u", "password_file": "/dev/null"},
        "auth": {"jwt": {"issuer": "i", "audience": "a", "jwks_file": "/dev/null"}},
        "policies": [{"name": "p", "default": "allow", "rules": [
            {"name": "ssn", "mask": {"columns": ["public.users.ssn"], "with": "redact"}}]}]})
    return SessionRules(PluginHost(config, None, only=("jwt", "mask")).accept(config).policies)


RULES = _rules()


def refuse(rule, reason: str, hint: str) -> Verdict:
    return Verdict.block(reason, hint)


def compare(answer, lineage: Lineage, may_touch: bool = True):
    return _compare([answer], RULES, (lineage,), may_touch, refuse)


SEEN_NAME = Lineage((Output("x", frozenset({src("name")}), True),), frozenset({src("name")}))


def test_a_masked_column_the_plan_reads_and_lineage_did_not_see_is_refused():
    answer = PlanUses(frozenset({src("ssn")}), frozenset())
    assert "reads masked column public.users.ssn" in compare(answer, SEEN_NAME).reason
    seen = Lineage((Output("x", frozenset({src("ssn")}), True),), frozenset({src("ssn")}))
    assert compare(answer, seen) is None
    # lineage that does not know what it reads already fails closed: nothing more to compare
    assert compare(answer, Lineage(None, None)) is None


def test_a_masked_column_the_plan_tests_needs_an_oracle_in_lineage():
    answer = PlanUses(frozenset({src("ssn")}), frozenset({src("ssn")}))
    read = Lineage(None, frozenset({src("ssn")}))
    assert "tests masked column public.users.ssn" in compare(answer, read).reason
    aggregated = Lineage(None, frozenset({src("ssn")}), (OracleUse(src("ssn"), "aggregate"),))
    assert compare(answer, aggregated) is None  # max(ssn): the planner's IS NOT NULL, lineage's aggregate


def test_a_plan_not_had_refuses_only_what_may_touch_masked_tables():
    for answer in (PlanUnavailable("OperationalError"), PlanRefused("57014", "canceling statement")):
        assert "could not check" in compare(answer, SEEN_NAME).reason
        assert compare(answer, SEEN_NAME, may_touch=False) is None
    # what failed (it names the upstream's host and port) is logged, not told to the agent
    failed = compare(PlanUnavailable('OperationalError: connection to server at "10.0.0.7", port 5432 failed'),
                     SEEN_NAME)
    assert "10.0.0.7" not in failed.reason and "5432" not in failed.reason and "connection" in failed.reason
    assert compare(PlanRefused("42P01", "x"), SEEN_NAME) is None  # a temporary table of the session
    # a parameter's type the server cannot infer without the client's declared types (not passed):
    # `OR $2 IS NULL` had turned the check off
    for state in ("42P18", "42P08", "42725"):
        assert "could not check" in compare(PlanRefused(state, "x"), SEEN_NAME).reason
    # a lock: left to lineage only while the session's own catalog change is unread (lineage then
    # masks every output whole), refused otherwise (LOCK TABLE)
    assert _compare([PlanRefused("55P03", "x")], RULES, (SEEN_NAME,), True, refuse, True) is None
    assert "could not check" in compare(PlanRefused("55P03", "x"), SEEN_NAME).reason


def test_the_top_output_lists_what_each_result_column_names_itself():
    top = {"Node Type": "Sort", "Output": ["u.name", "$0", "u.ssn"], "Sort Key": ["u.ssn"],
           "Plans": [scan("u", ["u.name", "u.ssn"], **{"Parent Relationship": "Outer"})]}
    assert uses(top).outputs == (frozenset({src("name")}), frozenset(), frozenset({src("ssn")}))


def test_a_result_column_computed_from_a_masked_column_lineage_traced_elsewhere_is_refused():
    # (the third entry is the sort key, not a result column: lineage lists two)
    answer = PlanUses(frozenset({src("name"), src("ssn")}), frozenset(),
                      outputs=(frozenset({src("ssn")}), frozenset(), frozenset({src("ssn")})))
    elsewhere = Lineage((Output("x", frozenset({src("name")}), True), Output("y", frozenset({src("ssn")}), True)),
                        frozenset({src("name"), src("ssn")}))
    got = _compare([answer], RULES, (elsewhere,), True, refuse, False, [elsewhere])
    assert "result column 1 (x) from masked column public.users.ssn" in got.reason
    traced = Lineage((Output("x", frozenset({src("ssn")}), True), Output("y", frozenset(), False)),
                     frozenset({src("ssn")}))
    assert _compare([answer], RULES, (traced,), True, refuse, False, [traced]) is None
    opaque = Lineage((Output("x", frozenset(), False, opaque=True), Output("y", frozenset(), False)),
                     frozenset({src("ssn")}))
    assert _compare([answer], RULES, (opaque,), True, refuse, False, [opaque]) is None  # masked whole anyway


def _counted(output: list[str], builtin: bool = True, strategy: str = "Plain", **scan_keys) -> PlanUses:
    index_scan = {"Node Type": "Index Only Scan", "Relation Name": "users", "Schema": "public", "Alias": "users",
                  "Index Name": "users_name_ssn", "Output": [], "Parent Relationship": "Outer",
                  INDEX_KEYS: ["name", "ssn"], RELATION_INDEXES: [[["name", "ssn"], ["name", "ssn"]]], **scan_keys}
    return uses({"Node Type": "Aggregate", "Strategy": strategy, "Output": output, BUILTIN_AGGREGATES: builtin,
                 "Plans": [index_scan]})


def test_an_index_order_an_order_blind_aggregate_reads_is_no_oracle():
    # count(*) over an index only scan of (name, ssn) (after a VACUUM): one row, whatever the order
    for output in (["count(*)"], ["count(users.id)", "max(users.id)"], ["min(id)"], ["every(x)"]):
        got = _counted(output)
        assert got.orders == frozenset() and got.may_order == frozenset() and got.may_cover == frozenset(), output


def test_an_aggregate_that_could_see_the_order_keeps_it_an_oracle():
    ssn_order = {src("name"), src("ssn")}
    for output, more in [(["string_agg(id::text, ',')"], {}),             # its value is the order
                         (["count(set_config('x.y', id::text, false))"], {}),  # a function per row
                         (["count((id * 2))"], {}),                         # an operator per row
                         (["public.count(*)"], {}),                        # not pg_catalog's
                         (["count(*)"], {"Filter": "(users.id > 0)"}),     # code per row below it
                         (["sum(id)"], {})]:                                 # floats' sums differ by order
        assert _counted(output, **more).orders == ssn_order, output
    # an aggregate of the agent's own named count on the search_path; a grouped aggregate
    assert _counted(["count(*)"], builtin=False).orders == ssn_order
    assert _counted(["count(*)"], strategy="Sorted").orders == ssn_order
