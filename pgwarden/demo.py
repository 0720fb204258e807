"""`pgwarden demo`: a throwaway PostgreSQL with sample data, pgwarden in front, a ready psql line.

Everything lives under one directory (``.demo`` by default) and is removed on
Ctrl-C; the PostgreSQL cluster itself lives in a temporary directory that the
unprivileged server user can reach.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import yaml

from pgwarden.testing.postgres import APP_PASSWORD, APP_USER, TempPostgres

ISSUER = "https://pgwarden.demo"
AUDIENCE = "pgwarden"

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
ALTER TABLE users OWNER TO app;
ALTER TABLE orders OWNER TO app;
"""


def write_config(directory: Path, pg: TempPostgres, jwks: Path, port: int) -> Path:
    password_file = directory / "upstream-password"
    password_file.write_text(APP_PASSWORD + "\n")
    password_file.chmod(0o600)
    config = {
        "listen": {"host": "127.0.0.1", "port": port},
        "admin": {"host": "127.0.0.1", "port": 0},
        # Records to a file: `pgwarden tail -f` it in another terminal.
        "recording": {"sinks": [{"file": str(directory / "records.jsonl")}]},
        "upstream": {
            "host": pg.host,
            "port": pg.port,
            "database": "appdb",
            "user": APP_USER,
            "password_file": str(password_file),
        },
        "auth": {"jwt": {"issuer": ISSUER, "audience": AUDIENCE, "jwks_file": str(jwks)}},
        # Agents in the group ai-agents get this policy; anyone else is refused.
        "policies": [{"name": "agents", "when": {"groups": ["ai-agents"]}, "default": "allow"}],
    }
    path = directory / "pgwarden.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_demo(directory: Path, port: int = 6432) -> int:
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from pgwarden.app import Application
    from pgwarden.config import load_config
    from pgwarden.tokens import generate_key, mint

    directory = directory.resolve()
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    print("pgwarden demo: starting a throwaway PostgreSQL ...", flush=True)
    pg = TempPostgres()
    try:
        pg.start()
        pg.psql(SAMPLE_DATA, "appdb")
        private, jwks = generate_key(directory / "keys")
        config = load_config(write_config(directory, pg, jwks, port))
        app = Application(config, reactor)
        try:
            app.listen()
            admin = app.listen_admin().getHost().port
        except Exception as e:
            print(f"pgwarden demo: cannot listen on 127.0.0.1:{port}: {e} (try --port)", file=sys.stderr)
            return 1
        token = mint(private, subject="demo-agent", issuer=ISSUER, audience=AUDIENCE,
                     groups=["ai-agents"], ttl_s=8 * 3600)
        (directory / "token").write_text(token + "\n")
        globalLogBeginner.beginLoggingTo(
            [textFileLogObserver(open(directory / "pgwarden.log", "a"))], redirectStandardIO=False
        )
        print(
            f"""
pgwarden is listening on 127.0.0.1:{port}, in front of PostgreSQL on {pg.host}:{pg.port}.
Sample data: tables users (name, email, ssn, card_number) and orders.
Your token (subject demo-agent, group ai-agents) is in {directory / 'token'}.

Connect as the agent would, with the token as the password:

  PGPASSWORD="$(cat {directory / 'token'})" psql "host=127.0.0.1 port={port} user=agent dbname=appdb sslmode=disable"

Config: {directory / 'pgwarden.yaml'}   Log: {directory / 'pgwarden.log'}
Records: pgwarden tail -f {directory / 'records.jsonl'}
Metrics: http://127.0.0.1:{admin}/metrics   Readiness: http://127.0.0.1:{admin}/readyz
Press Ctrl-C to stop and remove everything.
""",
            flush=True,
        )
        reactor.addSystemEventTrigger("before", "shutdown", app.stop)
        reactor.run()
    finally:
        pg.stop()
        shutil.rmtree(directory, ignore_errors=True)
        print("pgwarden demo: stopped and cleaned up.")
    return 0
