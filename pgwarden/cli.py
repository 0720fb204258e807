"""The `pgwarden` command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import attrs

from pgwarden.config import ConfigError


def tune_gc() -> None:
    """Moves start-up objects out of the collector's way and collects young objects less often.

    A relay allocates many short-lived objects per statement and few cycles;
    with the default threshold (700) the collector runs every few statements.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _install_reactor():
    """The reactor PGWARDEN_REACTOR names (pgwarden's own unless it says ``default``), or None
    after saying why not."""
    from pgwarden.proxy.reactor import install

    try:
        return install()
    except ValueError as e:
        print(f"pgwarden: {e}", file=sys.stderr)
        return None


def _cmd_run(args) -> int:
    reactor = _install_reactor()
    if reactor is None:
        return 2
    checked = _checked(args.config, reactor)  # exactly what `pgwarden check` validates
    if checked is None:
        return 2
    config, plugins = checked
    from twisted.logger import Logger

    from pgwarden import oplog
    from pgwarden.app import Application
    from pgwarden.proxy.peer import port_number
    from pgwarden.proxy.reactor import name_of

    oplog.start()
    Logger(namespace="pgwarden.run").info("reactor: {reactor}", reactor=name_of(reactor))
    from pgwarden.descriptors import raise_soft_limit

    limit = raise_soft_limit()
    Logger(namespace="pgwarden.run").info("{limit}", limit=limit.describe(), fd_soft=limit.soft, fd_hard=limit.hard)
    try:
        app = Application(config, reactor, plugins=plugins)
        port = app.listen()
        admin_port = app.listen_admin()
        mcp_port = app.listen_mcp() if config.mcp is not None else None
    except Exception as e:  # what only applying the config shows (files missing, sinks, ports)
        print(f"pgwarden: cannot start: {e}", file=sys.stderr)
        return 2
    # The admin port first: whoever waits for the ready file may read both then.
    if args.admin_port_file:
        _write_at_once(args.admin_port_file, str(port_number(admin_port)))
    if args.mcp_port_file and mcp_port is not None:
        _write_at_once(args.mcp_port_file, str(port_number(mcp_port)))
    if args.ready_file:
        _write_at_once(args.ready_file, str(port_number(port)))
    from pgwarden.watch import watch_config

    watch_config(app, reactor, args.config, args.reload_poll_s)
    # Whatever stops the reactor, the last records are written and the sinks closed.
    reactor.addSystemEventTrigger("before", "shutdown", app.stop)
    reactor.callWhenRunning(_graceful_on_sigterm, app, reactor)
    tune_gc()
    reactor.run()
    return 0


def _write_at_once(path: str, text: str) -> None:
    """Writes a file that a poller never sees empty or half written (a rename is atomic)."""
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(text)
    partial.replace(target)


def _graceful_on_sigterm(app, reactor) -> None:
    """SIGTERM (Kubernetes stopping the pod): drain gracefully, then exit 0; a second one stops now.

    Installed once the reactor runs, replacing Twisted's handler (which stops at once).
    """
    import signal

    def drain() -> None:
        if app.stopping:
            reactor.stop()
            return
        app.shutdown().addBoth(lambda _: reactor.stop())

    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(drain))


def _plugin_host():
    """Every installed plugin (discovery only), or None after printing why not."""
    from pgwarden.plugins import PluginError, PluginHost

    try:
        return PluginHost(None, reactor=None)
    except PluginError as e:
        print(e, file=sys.stderr)
        return None


def _checked(path: str, reactor=None):
    """The config and its plugins as `run` validates them, or None after printing every problem."""
    from pgwarden.preflight import load_checked

    try:
        return load_checked(path, reactor)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return None


def _cmd_check(args) -> int:
    checked = _checked(args.config)
    if checked is None:
        return 2
    print(describe_config(*checked))
    if args.dsn:
        warnings = _mask_warnings(checked[0], args.dsn)
        if warnings is None:
            return 2
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
    return _check_tests(args, *checked)


def _check_tests(args, config, host) -> int:
    """The policy tests' coverage: a warning for each rule no case is decided by. The test files
    are ``--tests``, else the one beside the config by convention (CONFIG.tests.yaml) if any."""
    from pgwarden.policytests import beside, unexercised

    paths = args.tests or ([str(beside(args.config))] if beside(args.config).is_file() else [])
    if not paths:
        return 0
    ran = _policy_tests(config, host, paths, args.dsn, "check")
    if ran is None:
        return 2
    results = [result for _, found in ran for result in found]
    print(f"  tests    {len(results)} case(s) in {', '.join(paths)}")
    failed = sum(not r.passed for r in results)
    if failed:
        print(f"warning: {failed} test case(s) fail: pgwarden test -c {args.config} {' '.join(paths)}",
              file=sys.stderr)
    for rule in unexercised(config, results):
        print(f"warning: rule {rule} is exercised by no test case ({', '.join(paths)})", file=sys.stderr)
    return 0


def _policy_tests(config, host, paths: list[str], dsn: str | None, command: str):
    """(test file, results) for each of ``paths``, or None after printing why they cannot run."""
    from pgwarden.policytests import catalog_for, load_tests, run_tests
    from pgwarden.sql.context import default_context

    base = default_context().catalog
    if dsn:
        context = _live_context(dsn, command)
        if context is None:
            return None
        base = context.catalog
    ran = []
    try:
        for path in paths:
            tests = load_tests(path, config)
            ran.append((tests, run_tests(config, host, tests, catalog_for(tests, base, live=bool(dsn)))))
    except ConfigError as e:
        print(e, file=sys.stderr)
        return None
    return ran


def _cmd_test(args) -> int:
    """Exit 0: every case passes; 1: a case fails; 2: the config or a test file cannot be used."""
    import json

    from pgwarden.policytests import report_lines

    checked = _checked(args.config)
    if checked is None:
        return 2
    config, host = checked
    ran = _policy_tests(config, host, args.tests, args.dsn, "test")
    if ran is None:
        return 2
    if args.json:
        print(json.dumps([{"file": tests.source, "case": r.case.name, "line": tests.lines.get(("cases", r.index)),
                           "passed": r.passed, "problems": list(r.problems),
                           "verdict": {"action": r.decision.verdict.action, "policy": r.decision.verdict.policy,
                                       "rule": r.decision.verdict.rule, "reason": r.decision.verdict.reason},
                           "masked": [attrs.asdict(m) for m in r.decision.masked]}
                          for tests, results in ran for r in results], indent=2))
    else:
        for tests, results in ran:
            print("\n".join(report_lines(results, tests)))
    return 1 if any(not r.passed for _, results in ran for r in results) else 0


def _mask_warnings(config, dsn: str) -> list[str] | None:
    """The mask rules' columns the database at ``dsn`` does not have; None after printing why
    the catalog could not be read."""
    import psycopg

    from pgwarden.catalog.loader import build_catalog, read_rows
    from pgwarden.masking import missing_columns

    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            catalog = build_catalog(read_rows(conn), source="live", complete=True)
    except Exception as e:  # noqa: BLE001 - any failure to read it is reported, never a traceback
        print(f"cannot read the catalog at --dsn: {e}", file=sys.stderr)
        return None
    return missing_columns(config.policies, catalog)


def describe_config(config, plugins=None) -> str:
    """What a valid file grants, for people: who gets which policy, and its rules (each kind's
    options as its plugin's class reads them); with the plugin host, which plugins run."""
    lines = [
        f"{config.source}: valid",
        f"  listen   {config.listen.host}:{config.listen.port}" + (" (TLS)" if config.listen.tls else ""),
        f"  upstream {config.upstream.user}@{config.upstream.host}:{config.upstream.port}/"
        f"{config.upstream.database} (TLS {config.upstream.tls.mode})",
    ]
    if plugins is not None:
        lines.append(f"  plugins  {', '.join(p.name for p in plugins.loaded()) or 'none'}")
        lines.append("  kinds    " + "; ".join(f"{kind} by {', '.join(names)}"
                                               for kind, names in plugins.rule_kinds.items()))
    if not config.policies:
        lines.append("  no policies: every connection is refused")
    for policy in config.policies:
        w = policy.when
        who = []
        if w.groups:
            who.append("groups " + ", ".join(w.groups))
        if w.subject:
            who.append(f"subject {w.subject}")
        for k, v in w.claims.items():
            who.append(f"claim {k}={v}")
        shadowed = sum(r.mode == "shadow" for r in policy.rules)
        lines.append(f"  policy {policy.name}" + (" (SHADOW: evaluated and recorded, never enforced)"
                                                  if policy.mode == "shadow" else "")
                     + f": for {' and '.join(who) or 'everyone'}; "
                     f"default {policy.default}; {len(policy.rules)} rule(s)"
                     + (f", {shadowed} in shadow" if shadowed and policy.mode != "shadow" else ""))
        for rule in policy.rules:
            spec = rule.spec
            fields = {k: v for k, v in attrs.asdict(spec, recurse=False).items() if v not in ((), None, {})} \
                if attrs.has(type(spec)) else {}
            detail = ", ".join(f"{k.rstrip('_')}={v}" for k, v in fields.items())
            lines.append(f"    {rule.kind:8} {rule.name or '(unnamed)'}"
                         + (" (shadow)" if rule.mode == "shadow" and policy.mode != "shadow" else "")
                         + f": {detail}" + (f" — {rule.reason}" if rule.reason else ""))
    return "\n".join(lines)


def _cmd_explain(args) -> int:
    """The analysis of one statement and the verdict the policies give it, with no database."""
    import json

    from twisted.internet.defer import Deferred

    from pgwarden.explain import StatementMasks, masks_json, masks_lines, statement_masks
    from pgwarden.identity import Identity
    from pgwarden.offline import ANALYSIS_FAILED, decide
    from pgwarden.policy import matching_policies
    from pgwarden.policy.shadow import split
    from pgwarden.session import Session
    from pgwarden.shadow import Shadow
    from pgwarden.sql.context import default_context
    from pgwarden.sql.lineage import lineage_json

    checked = _checked(args.config)
    if checked is None:
        return 2
    config, host = checked
    try:
        args.sql.encode("utf-8")
    except UnicodeEncodeError as e:
        # The shell handed over bytes that are not UTF-8 (Python keeps them as lone surrogates).
        byte = args.sql[e.start].encode("utf-8", "surrogateescape")
        print(f"pgwarden explain: the statement is not valid UTF-8 (byte 0x{byte.hex()} at character {e.start}); "
              "a UTF-8 server would refuse it as well", file=sys.stderr)
        return 2
    identity = Identity(args.subject, frozenset(args.group), {"sub": args.subject, "groups": args.group})
    policies, shadow_units = split(matching_policies(identity, config.policies))
    context = None
    if args.dsn:
        context = _live_context(args.dsn)
        if context is None:
            return 2
    catalog = (context or default_context()).catalog
    decision = decide(config, host, identity, args.sql, context, catalog)
    statement, verdict = decision.statement, decision.verdict
    if verdict.rule == ANALYSIS_FAILED:  # the proxy would refuse it: say so plainly
        print(f"pgwarden explain: {verdict.reason}; pgwarden refuses such a statement", file=sys.stderr)
        return 1
    analysis = statement.analysis
    lineage = statement.lineage
    masks = list(decision.masks)
    refusals = list(decision.masking_refusals)
    shadow_session = Session("explain", identity, config.upstream.database, policies=policies)
    shadow = Shadow.of(shadow_session, shadow_units)
    shadow_verdicts: list[dict] = []
    shadow_masks: list[tuple[str, list[StatementMasks]]] = []
    if shadow is not None:  # what the shadow rules and policies would say, as the proxy records it
        found = shadow.evaluate(host, statement)
        if isinstance(found, Deferred):
            got: list[object] = []
            found.addBoth(got.append)
            found = got[0] if got and isinstance(got[0], list) else [
                {"policy": u.policy, "rule": u.rule, "action": "error", "reason": "no answer at once"}
                for u, _ in shadow.units]
        shadow_verdicts = found
        for unit, view in shadow.masking:
            name = f"{unit.policy}/{unit.rule}" if unit.rule else f"{unit.policy} (policy)"
            shadow_masks.append((name, statement_masks(host, statement, view, catalog)))
    result: dict[str, Any] = {
        "sql": statement.sql,
        "kinds": sorted(analysis.kinds),
        "tables": sorted(analysis.tables),
        "writes": sorted(analysis.writes),
        "indirect_writes": [f"{kind} {table}" for kind, table in sorted(analysis.indirect_writes)],
        "functions": sorted(analysis.functions),
        "has_where": analysis.has_where,
        "lineage": [lineage_json(one) for one in lineage],
        "catalog": catalog.source,
        "policies": list(decision.policies),
        "masks": masks_json(masks),
        "masking_refusals": [{"plugin": name, "policy": v.policy, "rule": v.rule, "reason": v.reason}
                             for name, v in refusals],
        "verdict": {"action": verdict.action, "policy": verdict.policy, "rule": verdict.rule,
                    "reason": verdict.reason, "hint": verdict.hint},
        "shadow": shadow_verdicts,
        "shadow_masks": [{"unit": name, "masks": masks_json(m)} for name, m in shadow_masks],
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key in ("kinds", "tables", "writes", "functions"):
            if key == "functions" and result["indirect_writes"]:
                print(f"{'also':10} {', '.join(result['indirect_writes'])}")
            print(f"{key:10} {', '.join(result[key]) or '-'}")
        print(f"{'has_where':10} {result['has_where']}")
        for i, one in enumerate(lineage, 1):
            for line in _lineage_lines(one, i if len(lineage) > 1 else None):
                print(line)
        print(f"{'policies':10} {', '.join(result['policies']) or '-'}")
        for line in masks_lines(masks):
            print(line)
        for name, v in refusals:
            by = f"{v.policy}/{v.rule}" if v.policy else v.rule
            print(f"{'refused':10} {v.reason} (plugin {name}, {by})")
        v = result["verdict"]
        print(f"{'verdict':10} {v['action']}" + (f" by {v['policy']} / {v['rule']}" if v["policy"] else ""))
        if v["reason"]:
            print(f"{'reason':10} {v['reason']}")
        if v["hint"]:
            print(f"{'hint':10} {v['hint']}")
        for entry in shadow_verdicts:  # never enforced: shown apart from the verdict
            where = f"{entry['policy']}/{entry['rule']}" if entry["rule"] else f"{entry['policy']} (policy)"
            print(f"{'shadow':10} {entry['action']} by {where}" + (f": {entry['reason']}" if entry["reason"] else ""))
        for name, unit_masks in shadow_masks:
            for line in masks_lines(unit_masks):
                if line.startswith("  "):  # an output and its mask
                    print(line)
                elif not line.endswith(" none"):  # `masks      1 of 2 output(s) masked`
                    print(f"{'shadow':10} mask by {name}: {line[11:]}")
    return 0 if verdict.action == "allow" else 1


def _live_context(dsn: str, command: str = "explain"):
    """The analysis context of the database at ``dsn``: its live catalog, its user and search_path
    (None after saying why it cannot be read)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    from pgwarden.catalog.live import _scrub
    from pgwarden.catalog.loader import build_catalog, read_rows
    from pgwarden.catalog.snapshot import load_snapshot
    from pgwarden.sql.context import DEFAULT_PATH, SqlContext, parse_path

    password = None
    try:
        given = conninfo_to_dict(dsn).get("password")
        password = None if given is None else str(given)
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute("SELECT current_user, current_setting('search_path')").fetchone()
            assert row is not None  # one row, always
            user, path = row
            rows = read_rows(conn)
    except Exception as e:  # noqa: BLE001 - any failure is reported, never with the password
        print(f"pgwarden {command}: cannot read the catalog of --dsn: "
              f"{_scrub(f'{type(e).__name__}: {e}'.strip(), password)}", file=sys.stderr)
        return None
    base = load_snapshot(rows.server_version)
    catalog = build_catalog(rows, source="live", complete=True, base_settings=base.settings)
    start = parse_path(path)
    return SqlContext(catalog, user=user, search_path=start, default_path=start or DEFAULT_PATH)


def _lineage_lines(lineage, number: int | None) -> list[str]:
    """Each output as ``name <- sources (direct | derived | opaque)``, then the oracles."""
    from pgwarden.sql.lineage import UNTRACED

    head = "lineage" if number is None else f"lineage {number}"
    if lineage.refers is not None:
        kind, name = lineage.refers
        return [f"{head:10} the rows of {kind} {name} (as the session defined it)"]
    if lineage.outputs is None and not lineage.opaque:
        lines = [f"{head:10} returns no rows"]
    elif lineage.outputs is None:
        lines = [f"{head:10} opaque: what it returns cannot be traced"]
    else:
        lines = [f"{head:10} " + ("(the outputs cannot all be traced: every column counts as opaque)"
                                  if lineage.opaque else f"{len(lineage.outputs)} output(s)")]
        for output in lineage.outputs:
            kind = "opaque" if output.opaque else "direct" if output.direct else "derived"
            sources = ", ".join(sorted(map(str, output.sources))) or "no column"
            lines.append(f"  {output.name} <- {sources} ({kind})")
    for use in lineage.oracles:
        source = "a value it cannot trace" if use.source == UNTRACED else use.source
        lines.append(f"  oracle: {source} in {use.clause}")
    if lineage.reads is None:
        lines.append("  reads: not known (every column of the tables it touches)")
    return lines


def _cmd_token(args) -> int:
    from pgwarden.tokens import mint

    try:
        token = mint(Path(args.key), subject=args.subject, issuer=args.issuer, audience=args.audience,
                     groups=args.group, ttl_s=args.ttl, kid=args.kid)
    except OSError as e:
        print(f"pgwarden token: {args.key}: cannot read the key: {e.strerror}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as e:  # cryptography's: not a PEM private key (or a wrong kind)
        print(f"pgwarden token: {args.key}: expected an RSA private key in PEM form: {e}", file=sys.stderr)
        return 2
    print(token)
    return 0


def _cmd_plugins(args) -> int:
    if args.config:
        checked = _checked(args.config)
        if checked is None:
            return 2
        host = checked[1]
    else:
        host = _plugin_host()
        if host is None:
            return 2
    kinds = host.declared_rule_kinds
    for p in host.loaded():
        print(f"{p.name} {p.version or '-'} ({p.source})")
        for hook in p.hooks:
            print(f"    {hook}")
        for name in p.rule_kinds:
            kind = kinds[name]
            print(f"    rule kind {name}: {kind.options.__name__}" + (f" — {kind.doc}" if kind.doc else ""))
        for warning in p.warnings:
            print(f"    deprecated: {warning}")
    return 0


def _cmd_demo(args) -> int:
    if _install_reactor() is None:
        return 2
    from pgwarden.demo import run_demo

    return run_demo(Path(args.dir), port=args.port, reload_poll_s=args.reload_poll_s)


def _cmd_webhook(args) -> int:
    from pgwarden.k8s.server import run

    return run(args.config)


class _Version(argparse.Action):
    """``--version``: what runs is found out only when asked (it imports the compiled modules)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from pgwarden import __version__, compiled

        print(f"pgwarden {__version__}, {compiled.build()}")
        parser.exit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pgwarden", description=__doc__)
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="print the version, and whether the hot path runs compiled or as pure Python")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the proxy")
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--ready-file", help="write the listening port here once listening (after --admin-port-file)")
    p.add_argument("--admin-port-file", help="write the admin endpoint's port here once listening")
    p.add_argument("--mcp-port-file", help="write the MCP endpoint's port here once listening (with mcp:)")
    p.add_argument("--reload-poll-s", type=float, default=2.0,
                   help="how often to look for a changed config file (0: only on SIGHUP)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("check", help="validate a config file")
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--dsn", help="also check the mask rules' columns against this database's catalog")
    p.add_argument("--tests", action="append", metavar="FILE",
                   help="policy test files: warn about rules no case exercises (default: CONFIG.tests.yaml "
                        "beside the config, if there is one)")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("test", help="run policy test cases (identity + SQL -> expected verdict, rule, masks) "
                                    "without a database (or with --dsn, against its catalog)")
    p.add_argument("-c", "--config", required=True)
    p.add_argument("tests", nargs="+", metavar="TESTS", help="test files (YAML; docs/policies.md)")
    p.add_argument("--dsn", help="a libpq connection string: decide against that database's catalog")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_test)

    p = sub.add_parser("explain", help="the verdict on one statement for one identity, its outputs' lineage "
                                       "and masks, without a database (or with --dsn, against its catalog)")
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--dsn", help="a libpq connection string: resolve names against that database's catalog")
    p.add_argument("--subject", required=True)
    p.add_argument("--group", action="append", default=[])
    p.add_argument("--json", action="store_true")
    p.add_argument("sql")
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser("token", help="mint a signed test token from a local key")
    p.add_argument("--key", required=True, help="PEM private key")
    p.add_argument("--subject", required=True)
    p.add_argument("--issuer", required=True)
    p.add_argument("--audience", default="pgwarden")
    p.add_argument("--group", action="append", default=[])
    p.add_argument("--ttl", type=int, default=3600)
    p.add_argument("--kid", default="pgwarden-local")
    p.set_defaults(func=_cmd_token)

    p = sub.add_parser("plugins", help="list the loaded plugins, their versions and hooks")
    p.add_argument("-c", "--config", help="apply this config's plugins.disable and validate options")
    p.set_defaults(func=_cmd_plugins)

    p = sub.add_parser("demo", help="throwaway PostgreSQL + pgwarden, with a ready psql line")
    p.add_argument("--dir", default=".demo")
    p.add_argument("--port", type=int, default=6432)
    p.add_argument("--reload-poll-s", type=float, default=2.0,
                   help="how often to look for a changed config file (0: only on SIGHUP)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("webhook", help="the Kubernetes admission webhook that injects the pgwarden sidecar")
    p.add_argument("-c", "--config", required=True, help="the injector config (injector.yaml)")
    p.set_defaults(func=_cmd_webhook)

    from pgwarden import approvals_cli, records_cli

    records_cli.add_parsers(sub)
    approvals_cli.add_parsers(sub)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:
        # the reader of its output left (`pgwarden tail -f | head`): done, without a traceback,
        # and without another error when Python flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a shell reports a command ended by SIGPIPE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
