"""setup.cfg lists packages explicitly (plugins/ maps to pgwarden_plugins): none may be forgotten."""

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_directory_is_listed():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    found = set()
    for init in ROOT.joinpath("pgwarden").rglob("__init__.py"):
        found.add(".".join(init.parent.relative_to(ROOT).parts))
    for init in ROOT.joinpath("plugins").rglob("__init__.py"):
        found.add(".".join(("pgwarden_plugins",) + init.parent.relative_to(ROOT / "plugins").parts))
    assert found == listed


def test_builtin_plugins_are_entry_points():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    eps = cfg["options.entry_points"]["pgwarden"]
    assert "jwt = pgwarden_plugins.jwt_auth:JwtAuthentication" in eps
