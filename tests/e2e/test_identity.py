"""Sessions follow their identity: token expiry, policies after a reload, application_name."""

from __future__ import annotations

import os
import signal

import psycopg
import pytest
import yaml
from rawclient import RawClient

from pgwarden.config import _CONVERTER, Config
from pgwarden.testing import wait_until
from pgwarden.testing.postgres import free_port
from pgwarden.testing.pytest_plugin import base_config
from pgwarden.wire import messages as m


def test_session_ends_when_its_token_expires(pgwarden):
    rc = RawClient(pgwarden.host, pgwarden.port, timeout=30)
    rc.login(pgwarden.token(ttl_s=1))  # still accepted (leeway), expires in a second
    msg = rc.recv_message()  # nothing sent: the proxy ends the session by itself
    assert isinstance(msg, m.ErrorResponse) and msg.get("S") == "FATAL"
    assert (msg.sqlstate, msg.message) == ("28P01", "pgwarden: your token expired; reconnect with a fresh token")
    assert rc.closed()


def test_session_may_outlive_its_token_when_configured(make_pgwarden):
    running = make_pgwarden(auth={"session_outlives_token": True})
    with psycopg.connect(running.dsn(running.token(ttl_s=1)), autocommit=True) as c:
        conns = running.call(lambda: list(running.app.connections))
        assert all(conn._timeout is None for conn in conns)
        assert c.execute("select 1").fetchone() == (1,)


def test_application_name_template(make_pgwarden):
    running = make_pgwarden(upstream={"application_name": "agent={subject} via={client}"})
    with psycopg.connect(running.dsn(running.token("a7"), application_name="cli"), autocommit=True) as c:
        name = c.execute("select application_name from pg_stat_activity where pid = pg_backend_pid()").fetchone()
        assert name == ("agent=a7 via=cli",)


def test_reload_applies_to_live_sessions_and_a_bad_config_keeps_the_old(make_pgwarden, pg_server, signing_keys,
                                                                         tmp_path):
    running = make_pgwarden()
    with psycopg.connect(running.dsn(running.token("agent-1", groups=["ai-agents"])), autocommit=True) as c:
        assert c.execute("select 1").fetchone() == (1,)
        doc = base_config(pg_server, signing_keys, tmp_path,
                          policies=[{"name": "humans", "when": {"groups": ["humans"]}}])
        assert running.call(running.app.reload, _CONVERTER.structure(doc, Config))
        with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification) as excinfo:
            c.execute("select 1")
        assert excinfo.value.diag.message_primary == "pgwarden: no policy for this identity"
        # a config that does not validate changes nothing
        broken = _CONVERTER.structure(
            base_config(pg_server, signing_keys, tmp_path, policies=[{"name": "p", "rules": [{"mask": {}}]}]),
            Config,
        )
        assert running.call(running.app.reload, broken) is False  # no loaded plugin interprets mask
        assert running.app.config.policies[0].name == "humans"


def _serve(tmp_path, pg_server, signing_keys, policies, pgwarden_process):
    """pgwarden run on a config reached through a ConfigMap-like symlink (..data -> version dir)."""
    def write_version(name, pols):
        d = tmp_path / name
        d.mkdir()
        doc = base_config(pg_server, signing_keys, tmp_path, listen={"port": port}, policies=pols)
        (d / "pgwarden.yaml").write_text(yaml.safe_dump(doc))
        return d

    port = free_port()  # the same in every version: a reload cannot move the listener
    write_version("v1", policies)
    (tmp_path / "..data").symlink_to("v1")
    (tmp_path / "pgwarden.yaml").symlink_to("..data/pgwarden.yaml")
    running = pgwarden_process(config=tmp_path / "pgwarden.yaml", args=["--reload-poll-s", "0.1"])
    return running, write_version


def _login_state(port, token) -> str:
    rc = RawClient("127.0.0.1", port)
    answer = rc.login(token)
    rc.close()
    return "ok" if isinstance(answer[-1], m.ReadyForQuery) else answer[0].sqlstate


def test_configmap_symlink_swap_and_sighup_reload(tmp_path, pg_server, signing_keys, pgwarden_process):
    running, write_version = _serve(tmp_path, pg_server, signing_keys, [{"name": "everyone"}], pgwarden_process)
    token = running.token()
    login_state = lambda: _login_state(running.port, token)  # noqa: E731
    assert login_state() == "ok"
    # The kubelet's update: a new version directory, then an atomic swap of ..data.
    write_version("v2", [{"name": "humans", "when": {"groups": ["humans"]}}])
    (tmp_path / "..data_tmp").symlink_to("v2")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    wait_until(20, login_state, "the swap to be noticed (no policy for the agent)", until=lambda s: s == "28000")
    # A broken file is refused and the running policy stays.
    v3 = write_version("v3", [{"name": "everyone"}])
    (v3 / "pgwarden.yaml").write_text("policies: [{name: x, rules: [{blok: {}}]}]\n")
    (tmp_path / "..data_tmp").symlink_to("v3")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    # SIGHUP re-reads the same (fixed) file.
    v3_fixed = yaml.safe_load((tmp_path / "v2" / "pgwarden.yaml").read_text())
    v3_fixed["policies"] = [{"name": "everyone"}]
    running.wait_for_log("reload refused, keeping the running config", timeout_s=20)
    assert login_state() == "28000"
    (v3 / "pgwarden.yaml").write_text(yaml.safe_dump(v3_fixed))
    running.proc.send_signal(signal.SIGHUP)
    wait_until(20, login_state, "the SIGHUP reload to apply", until=lambda s: s == "ok")
    assert running.stop() == 0
    out = running.log()
    assert "rules[0]" in out and "blok" in out
