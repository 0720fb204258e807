"""The image's two stages run without Docker (none here): the builder's wheel command on a copy of
what the Dockerfile COPYs, the final stage's offline install into an empty environment, then the
ENTRYPOINT + CMD as the image's non-root user, through which a client connects.

What this cannot show is the base image itself (no registry is reachable from the test machines);
the Dockerfile's instructions are taken from the file, so a changed command is run as changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

import psycopg
import pytest
import yaml
from deployfiles import exec_form, stages
from image_wheels import build_wheels, pip_command

from pgwarden.testing.postgres import APP_PASSWORD, APP_USER, free_port
from pgwarden.testing.pytest_plugin import AUDIENCE, ISSUER


@pytest.fixture(scope="module")
def image_root():
    if os.environ.get("PGWARDEN_PURE_PYTHON", "") not in ("", "0"):
        # The image is built the same whichever way this process runs pgwarden: built once
        # (~100 s, most of it the compiler), for `make test`'s test-builds job (Makefile: BUILD_TESTS).
        pytest.skip("the image's stages are built and checked once, by make test-builds")
    final = stages()[-1]
    # Not under pytest's temp dir: that is private to root, and the image's user must read this.
    root = Path(tempfile.mkdtemp(prefix="pgwarden-image-"))
    root.chmod(0o755)
    try:
        yield _build(root, final), final
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _build(root, final):
    built = os.environ.get("PGWARDEN_IMAGE_WHEELS")
    if built:  # built by `make test` beside the venv's setup (tests/deploy/image_wheels.py)
        wheels = Path(built) / "wheels"
        assert list(wheels.glob("pgwarden-*.whl")), f"no pgwarden wheel in {wheels} (PGWARDEN_IMAGE_WHEELS)"
    else:
        wheels = build_wheels(root, sys.executable)

    env_dir = root / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    install = pip_command(final.last("RUN").value, "install")
    install = [python] + install[1:]
    install[install.index(next(a for a in install if a.startswith("--find-links")))] = f"--find-links={wheels}"
    subprocess.run(install, check=True, capture_output=True, timeout=600)  # --no-index: offline
    uninstall = pip_command(final.last("RUN").value, "uninstall")
    subprocess.run([python] + uninstall[1:], check=True, capture_output=True, timeout=120)
    for p in [env_dir, *env_dir.rglob("*")]:
        if not p.is_symlink():
            p.chmod(0o755 if p.is_dir() or os.access(p, os.X_OK) else 0o644)
    return env_dir


def test_the_final_stage_has_no_build_tools(image_root):
    env_dir, _ = image_root
    names = {p.name.lower() for p in (env_dir / "lib").glob("python3*/site-packages/*")}
    assert not any(n.startswith(("pip", "setuptools", "wheel-", "wheel")) for n in names), names


def test_the_image_runs_its_hot_path_compiled(image_root):
    """The builder compiles the hot path (setup.py: mypyc, Cython): the image's pgwarden says so."""
    env_dir, _ = image_root
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler here: the wheel is pure Python (the Dockerfile's builder has gcc)")
    done = subprocess.run([str(env_dir / "bin" / "pgwarden"), "--version"], capture_output=True, text=True,
                          env={"PATH": f"{env_dir}/bin:/usr/bin:/bin"}, cwd="/", timeout=60, check=True)
    assert done.stdout.strip().endswith(", compiled (mypyc, Cython)"), done.stdout


@pytest.fixture
def image_fs():
    """A directory the image's user can read (pytest's temp dir is private to root)."""
    root = Path(tempfile.mkdtemp(prefix="pgwarden-image-fs-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_the_image_entrypoint_serves_as_its_non_root_user(image_root, image_fs, pg_server, signing_keys,
                                                         pgwarden_process):
    env_dir, final = image_root
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("switching to the image's user needs root and setpriv")
    uid, gid = final.last("USER").value.split(":")
    work = image_fs / "image-fs"
    (work / "etc").mkdir(parents=True)
    (work / "secrets").mkdir()
    (work / "secrets" / "password").write_text(APP_PASSWORD)
    shutil.copy(signing_keys["jwks"], work / "etc" / "jwks.json")
    port, admin = free_port(), free_port()
    config = work / "etc" / "pgwarden.yaml"
    config.write_text(yaml.safe_dump({
        "listen": {"host": "127.0.0.1", "port": port}, "admin": {"host": "127.0.0.1", "port": admin},
        "upstream": {"host": pg_server.host, "port": pg_server.port, "database": "appdb", "user": APP_USER,
                     "password_file": str(work / "secrets" / "password")},
        "auth": {"jwt": {"issuer": ISSUER, "audience": AUDIENCE, "jwks_file": str(work / "etc" / "jwks.json")}},
        "policies": [{"name": "agents", "rules": [{"name": "no-ddl", "block": {"statements": ["ddl"]}}]}],
    }))
    for p in [image_fs, work, *work.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    run = image_fs / "run"  # its port files, written by the image's user
    run.mkdir()
    os.chown(run, int(uid), int(gid))
    entrypoint, cmd = exec_form(final.last("ENTRYPOINT")), exec_form(final.last("CMD"))
    assert cmd[:2] == ["run", "-c"]
    running = pgwarden_process(
        config=config, directory=run,  # ENTRYPOINT + CMD, the test's config for the image's
        command=["setpriv", "--reuid", uid, "--regid", gid, "--clear-groups",
                 str(env_dir / "bin" / entrypoint[0]), *entrypoint[1:]],
        env={"PATH": f"{env_dir}/bin:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}, cwd="/")
    assert running.port == port
    status = [line for line in open(f"/proc/{running.pid}/status") if line.startswith("Uid:")][0].split()
    assert status[1:3] == [uid, uid]
    with psycopg.connect(running.dsn(), autocommit=True) as c:
        assert c.execute("select 41 + 1").fetchone() == (42,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("create table from_the_image (i int)")
    assert running.stop() == 0
