"""`pgwarden demo`: a throwaway PostgreSQL with sample data, pgwarden in front, a ready psql line.

What a newcomer sees is what pgwarden is for: the upstream role is an ordinary
one that owns the sample data (not a superuser), the policy blocks what an
agent should not do (docs/configuration.md), and three statements to try show a
refusal, a read and a filtered write. The config file is watched as `pgwarden
run` watches it, so an edit to the policy applies within seconds.

Everything lives under one directory (``.demo`` by default) and is removed on
Ctrl-C; the PostgreSQL cluster itself lives in a temporary directory that the
unprivileged server user can reach.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import sys
from pathlib import Path

from pgwarden.testing.postgres import TempPostgres
from pgwarden.verdict import Refusal, Verdict

ISSUER = "https://pgwarden.demo"
AUDIENCE = "pgwarden"
DATABASE = "appdb"
# The role pgwarden logs in as: owns the sample data, and nothing more.
OWNER = "demo_owner"
POLICY = "agents"

SAMPLE_DATA = """
CREATE TABLE users (
    id          serial PRIMARY KEY,
    name        text NOT NULL,
    email       text NOT NULL,
    ssn         text,
    card_number text
);
CREATE TABLE orders (
    id         serial PRIMARY KEY,
    user_id    int NOT NULL REFERENCES users (id),
    amount     numeric(10, 2) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO users (name, email, ssn, card_number)
SELECT 'User ' || g,
       'user' || g || '@example.com',
       lpad((g * 7919 % 900 + 100)::text, 3, '0') || '-' || lpad((g % 90 + 10)::text, 2, '0')
           || '-' || lpad((g * 31 % 9000 + 1000)::text, 4, '0'),
       '4111 1111 1111 ' || lpad((g * 97 % 10000)::text, 4, '0')
FROM generate_series(1, 50) g;
INSERT INTO orders (user_id, amount, created_at)
SELECT (g % 50) + 1, round((g * 13.37 % 500)::numeric, 2), now() - g * interval '1 hour'
FROM generate_series(1, 500) g;
"""

NO_DDL_REASON = "schema changes go through migrations"
NO_DDL_HINT = "Reads are allowed, and so are writes that name their rows (UPDATE/DELETE ... WHERE)."

# Functions a rule names on top of what the catalog tells (server_files, system, side_effect).
SERVER_FUNCTIONS = ["dblink*"]

# The statements the demo suggests, and what each shows.
DROP = "DROP TABLE orders;"
READ = "SELECT name, ssn, card_number FROM users ORDER BY id LIMIT 3;"
WRITE = "UPDATE orders SET amount = amount + 1 WHERE id = 1;"
APPROVE = "INSERT INTO orders (user_id, amount) VALUES (1, 99.50);"
APPROVE_REASON = "new orders need a human"
# Who may approve: the demo's approver token carries this group.
APPROVERS = "db-approvers"
#: the test cases of the demo's policy (`pgwarden test`), written beside its config
TESTS = Path(__file__).with_name("demo.tests.yaml")


def drop_refusal() -> Refusal:
    """The error the agent gets for DROP: the one the `no-ddl` rule below gives."""
    return Refusal.from_verdict(Verdict.block(NO_DDL_REASON, NO_DDL_HINT, policy=POLICY, rule="no-ddl"))


def _q(value: str) -> str:
    return json.dumps(value)  # a JSON string is a YAML string


def config_text(directory: Path, pg: TempPostgres, jwks: Path, port: int, password_file: Path) -> str:
    """The demo's config file, commented for a reader who opens it to change the policy."""
    functions = ", ".join(map(_q, SERVER_FUNCTIONS))
    return f"""\
# The config of `pgwarden demo`. Edit and save: pgwarden applies it within seconds, as
# `pgwarden run` does (a file with a mistake is refused and the running policy stays; the
# reason is in pgwarden.log). docs/configuration.md describes every key.
listen: {{host: 127.0.0.1, port: {port}}}
admin: {{host: 127.0.0.1, port: 0}}
# Records to a file: `pgwarden tail -f` it in another terminal.
recording:
  sinks: [{{file: {_q(str(directory / "records.jsonl"))}}}]
upstream:
  host: {pg.host}
  port: {pg.port}
  database: {DATABASE}
  user: {OWNER}                # owns the sample tables; not a superuser
  password_file: {_q(str(password_file))}
auth:
  jwt: {{issuer: {_q(ISSUER)}, audience: {AUDIENCE}, jwks_file: {_q(str(jwks))}}}
approvals:
  mode: hold                   # the statement waits on the wire until decided
  timeout_s: 600
  approver_groups: [{APPROVERS}]   # the approver token's group
policies:
  - name: {POLICY}
    when: {{groups: [ai-agents]}}   # the demo token's group; any other identity is refused
    default: allow                # what no rule below matches: reads, filtered writes
    rules:
      - name: no-ddl
        block: {{statements: [ddl, truncate, grant]}}
        reason: {_q(NO_DDL_REASON)}
        hint: {_q(NO_DDL_HINT)}
      - name: no-administration    # roles, server settings, administrators' functions and relations
        block: {{statements: [role, system]}}
        reason: "the server's administration is an operator's"
        hint: "Reads of the application's tables and filtered writes are allowed; ask an operator for the rest."
      - name: no-server-access     # the server's programs and files
        block: {{statements: [copy_program, copy_file, server_files]}}
        hint: "COPY ... TO STDOUT and COPY ... FROM STDIN are allowed."
      - name: no-side-effects      # functions that change state (nextval, lo_*, volatile user functions)
        block: {{statements: [side_effect]}}
        hint: "Query the tables instead; ask an operator for anything on the server itself."
      - name: no-server-functions
        block: {{functions: [{functions}]}}
        reason: functions that reach other servers are not allowed
      - name: no-opaque-code       # code pgwarden cannot see into
        block: {{statements: [do]}}
      - name: unparsable
        block: {{statements: [unknown]}}
      # VACUUM FULL, CLUSTER, REINDEX lock whole tables while they run; the kind is all
      # maintenance: a plain VACUUM and ANALYZE too (ANALYZE runs index expressions' code)
      - name: no-maintenance
        block: {{statements: [maintenance]}}
        hint: "An operator runs maintenance; reads and filtered writes are allowed."
      - name: unfiltered-writes
        block: {{statements: [delete, update], where: absent}}
      # No syntax check sees every WHERE that matches every row (`WHERE id = orders.id`): the
      # server counts what each write touched, and a write of more rows is rolled back.
      - name: blast-radius
        limit: {{rows_written: 100}}
      # Held until a person approves (docs/approvals.md): `mode: retry` refuses at once instead,
      # with a request id the agent has approved and then sends the statement again.
      - name: new-orders
        approve: {{statements: [insert], tables: [public.orders]}}
        reason: {_q(APPROVE_REASON)}
      # Masking (docs/masking.md): the agent reads these columns masked, never in clear.
      - {{name: pii, mask: {{columns: [public.users.ssn], with: redact}}}}
      - {{name: cards, mask: {{columns: [public.users.card_number], with: partial, keep_last: 4}}}}
"""


def write_config(directory: Path, pg: TempPostgres, jwks: Path, port: int, password: str) -> Path:
    password_file = directory / "upstream-password"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    path = directory / "pgwarden.yaml"
    path.write_text(config_text(directory, pg, jwks, port, password_file))
    # The policy's test cases beside it, where `pgwarden check` looks for them (docs/policies.md).
    (directory / "pgwarden.tests.yaml").write_text(TESTS.read_text())
    return path


def create_sample_data(pg: TempPostgres) -> str:
    """The owner role and its tables; returns the role's password (new for each demo)."""
    password = secrets.token_urlsafe(24)
    pg.psql(
        f"CREATE ROLE {OWNER} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
        f"PASSWORD '{password}';"
        f"ALTER DATABASE {DATABASE} OWNER TO {OWNER};"
    )
    pg.psql(f"SET ROLE {OWNER};" + SAMPLE_DATA, DATABASE)
    return password


def self_command() -> str:
    """This pgwarden, as a shell runs it: the running executable (`make demo` puts pgwarden in
    .venv/bin, not on the PATH), else this Python with ``-m pgwarden``."""
    argv0 = sys.argv[0]
    if argv0 and not argv0.endswith(".py") and os.path.isfile(argv0) and os.access(argv0, os.X_OK):
        return shlex.quote(os.path.abspath(argv0))
    return shlex.join([sys.executable, "-m", "pgwarden"])


def _indented(lines: list[str], by: str) -> str:
    return "\n".join(by + line for line in lines)


def banner(directory: Path, pg: TempPostgres, port: int, admin: int, reload_poll_s: float) -> str:
    me = self_command()
    token = shlex.quote(str(directory / "token"))
    approver_token = shlex.quote(str(directory / "approver-token"))
    config = shlex.quote(str(directory / "pgwarden.yaml"))
    refusal = drop_refusal()
    error = [f"ERROR:  {refusal.message}", f"DETAIL:  {refusal.detail}", f"HINT:  {refusal.hint}"]
    watching = (f"applied within {reload_poll_s:g}s of saving" if reload_poll_s > 0 else "applied on SIGHUP")
    return f"""
pgwarden is listening on 127.0.0.1:{port}, in front of PostgreSQL on {pg.host}:{pg.port}.
It logs in upstream as {OWNER}, an ordinary role that owns the sample data: tables users (name,
email, ssn, card_number) and orders. Your token (subject demo-agent, group ai-agents) is in {token}.

Connect as the agent would, with the token as the password:

  PGPASSWORD="$(cat {token})" psql "host=127.0.0.1 port={port} user=agent dbname={DATABASE} sslmode=disable"

and try:

  {DROP}
      refused before it reaches the database, with an error the agent can act on:
{_indented(error, "      ")}
  {READ}
      a read: allowed, three rows, ssn and card_number masked (***, **** **** **** 0097)
  {WRITE}
      a write that names its rows: allowed (UPDATE 1); without the WHERE it is refused
  {APPROVE}
      held for a person ({APPROVE_REASON}): psql waits, with a NOTICE naming the request.
      In another terminal, as the approver (token {approver_token}, group {APPROVERS}):
        export PGWARDEN_TOKEN="$(cat {approver_token})"
        {me} approvals list --url http://127.0.0.1:{admin}
        {me} approvals approve ID --url http://127.0.0.1:{admin}
      (or deny ID --reason "..."); or in a browser: http://127.0.0.1:{admin}/approvals/inbox/
      (paste the token there); the JSON API is http://127.0.0.1:{admin}/approvals/api/requests

The policy is in {config} ({watching}; check an edit first with
{me} check -c {config}).
Tests:     {me} test -c {config} {shlex.quote(str(directory / "pgwarden.tests.yaml"))}
Records:   {me} tail -f {shlex.quote(str(directory / 'records.jsonl'))}
Log:       {directory / 'pgwarden.log'}
Metrics:   http://127.0.0.1:{admin}/metrics   Readiness: http://127.0.0.1:{admin}/readyz
Press Ctrl-C to stop and remove everything.
"""


def _stop_on_ctrl_c(reactor) -> None:
    """From now on (the reactor about to run) Ctrl-C stops the reactor, whose shutdown stops pgwarden.

    The demo's own handler, not Twisted's: Twisted installs its SIGINT handler only over Python's
    default one, and a KeyboardInterrupt raised while the reactor starts (before Twisted would
    have installed it) is logged by Twisted's system event handling and the demo would go on.
    The stop itself runs in the reactor's loop (a handler interrupts whatever the main thread
    does, the log's own writes included)."""

    def stop() -> None:
        from twisted.internet.error import ReactorNotRunning
        from twisted.logger import Logger

        Logger(namespace="pgwarden.demo").info("Ctrl-C (SIGINT): stopping")
        try:
            reactor.stop()
        except ReactorNotRunning:  # stopping already (Ctrl-C twice)
            pass

    signal.signal(signal.SIGINT, lambda *_: reactor.callFromThread(stop))


def run_demo(directory: Path, port: int = 6432, reload_poll_s: float = 2.0) -> int:
    # Ctrl-C must stop the demo whatever SIGINT's disposition it inherited: a shell without job
    # control starts `pgwarden demo &` (a script's, a background `make`) with SIGINT ignored, and
    # Python keeps an inherited SIG_IGN; so did Twisted, which installs its handler only over
    # Python's default one: "Press Ctrl-C" was printed and Ctrl-C then did nothing. Until the
    # reactor runs, Ctrl-C raises KeyboardInterrupt and the ``finally`` below removes what was made.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from pgwarden.app import Application
    from pgwarden.config import ConfigError
    from pgwarden.preflight import load_checked
    from pgwarden.tokens import generate_key, mint
    from pgwarden.watch import watch_config

    directory = directory.resolve()
    pg: TempPostgres | None = None
    try:
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        print("pgwarden demo: starting a throwaway PostgreSQL ...", flush=True)
        pg = TempPostgres()
        pg.start()
        password = create_sample_data(pg)
        private, jwks = generate_key(directory / "keys")
        path = write_config(directory, pg, jwks, port, password)
        try:
            config, plugins = load_checked(path, reactor)  # as `pgwarden run` checks its file
        except ConfigError as e:
            print(f"pgwarden demo: the demo's own config is refused:\n{e}", file=sys.stderr)
            return 1
        app = Application(config, reactor, plugins=plugins)
        try:
            app.listen()
            admin = app.listen_admin().getHost().port
        except Exception as e:
            print(f"pgwarden demo: cannot listen on 127.0.0.1:{port}: {e} (try --port)", file=sys.stderr)
            return 1
        token = mint(private, subject="demo-agent", issuer=ISSUER, audience=AUDIENCE,
                     groups=["ai-agents"], ttl_s=8 * 3600)
        (directory / "token").write_text(token + "\n")
        approver = mint(private, subject="demo-approver", issuer=ISSUER, audience=AUDIENCE,
                        groups=[APPROVERS], ttl_s=8 * 3600)
        (directory / "approver-token").write_text(approver + "\n")
        (directory / "approver-token").chmod(0o600)
        globalLogBeginner.beginLoggingTo(
            [textFileLogObserver(open(directory / "pgwarden.log", "a"))], redirectStandardIO=False
        )
        watch_config(app, reactor, str(path), reload_poll_s)
        reactor.addSystemEventTrigger("before", "shutdown", app.stop)
        _stop_on_ctrl_c(reactor)
        print(banner(directory, pg, port, admin, reload_poll_s), flush=True)
        reactor.run()
    except KeyboardInterrupt:  # Ctrl-C before the reactor ran
        print("pgwarden demo: interrupted while starting.", flush=True)
        return 130
    finally:
        # Ctrl-C again does not interrupt the cleanup (nor the pg_ctl it runs: it inherits this).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if pg is not None:
            pg.stop()
        shutil.rmtree(directory, ignore_errors=True)
        print("pgwarden demo: stopped and cleaned up.", flush=True)
    return 0
