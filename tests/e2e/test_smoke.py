import psycopg


def test_select_through_pgwarden(pgwarden):
    with psycopg.connect(pgwarden.dsn()) as conn:
        assert conn.execute("select 1 + 1").fetchone() == (2,)
