"""Importing one part of pgwarden loads only what that part needs.

The package root names the plugin API (`from pgwarden import Verdict`), and those
names are imported on first use: the protocol codec must be usable (and testable,
and fast to start) without pluggy, PyJWT, yaml, cattrs or pglast. Each check runs
in a fresh interpreter, since this one has them all loaded already.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("pluggy", "jwt", "yaml", "cattrs", "pglast", "twisted")

PROBE = r"""
import json, sys
exec(sys.argv[1])
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def loaded_after(code: str) -> set[str]:
    result = subprocess.run([sys.executable, "-c", PROBE, code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


def test_importing_the_codec_loads_nothing_heavy():
    loaded = loaded_after("import pgwarden.wire\nfrom pgwarden.wire import messages, framing")
    assert "pgwarden" in loaded
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_the_probe_sees_what_the_plugin_api_loads():
    """The names of the package root still work, and load what they need when asked for."""
    loaded = loaded_after("from pgwarden import hookimpl, Verdict, Statement, Identity, Session, StoreKey")
    assert {"pluggy", "pglast", "jwt"} <= loaded


def test_submodules_are_still_imported_through_the_root():
    loaded = loaded_after("from pgwarden import lexical, verdict\nimport pgwarden\n"
                          "assert pgwarden.__version__\nassert 'Verdict' in dir(pgwarden)")
    assert "pgwarden" in loaded
