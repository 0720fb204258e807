"""deploy/Dockerfile, read statically: there is no Docker daemon to build it with here.

What these checks cannot see (that the image builds, that the wheels install on the
base image) needs `docker build`; docs/kubernetes.md says how.
"""

from __future__ import annotations

import configparser
import re
import shlex

import pytest
from deployfiles import DOCKERIGNORE, ROOT, Example, exec_form, stages

# What must not be in the final stage: compilers, build tool chains, dev headers.
BUILD_TOOLS = re.compile(
    r"\b(gcc|g\+\+|clang|cc|make|build-essential|libc6-dev|python3?-dev|libpq-dev|rustc|cargo)\b"
)


@pytest.fixture(scope="module")
def builder():
    return stages()[0]


@pytest.fixture(scope="module")
def final():
    return stages()[-1]


def _commands(stage) -> list[list[str]]:
    """The words of every command of every RUN (commands split at && and ;)."""
    return [shlex.split(command) for run in stage.all("RUN") for command in re.split(r"&&|;", run.value)]


def test_two_stages_on_the_same_slim_python_311():
    all_stages = stages()
    assert len(all_stages) == 2
    builder, final = all_stages
    assert builder.name == "builder" and final.name is None
    assert builder.base == final.base
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", final.base), final.base


def test_builder_makes_wheels_from_published_wheels_only(builder):
    wheel = [w for w in _commands(builder) if w[:4] == ["python", "-m", "pip", "wheel"]]
    assert len(wheel) == 1
    words = wheel[0]
    assert "--only-binary=:all:" in words  # no dependency compiled from source
    assert "--no-cache-dir" in words
    assert "--wheel-dir" in words and words[-1] == "."


def test_builder_compiles_the_hot_path_or_fails(builder):
    """The image ships pgwarden's hot path compiled (setup.py, mypyc): the builder has a C
    compiler, and a build that would fall back to pure Python fails (PGWARDEN_REQUIRE_COMPILE)."""
    commands = _commands(builder)
    installs = [w for w in commands if w[:2] == ["apt-get", "install"]]
    assert len(installs) == 1 and {"gcc", "libc6-dev", "--no-install-recommends"} <= set(installs[0])
    wheel = next(i for i in builder.all("RUN") if "pip wheel" in i.value)
    required = [e for e in builder.all("ENV") if e.value == "PGWARDEN_REQUIRE_COMPILE=1"]
    assert len(required) == 1 and required[0].line < wheel.line
    assert "setup.py" in _copied(builder)


def test_final_stage_installs_the_wheels_offline_from_a_bind_mount(builder, final):
    wheel_dir = shlex.split(next(i.value for i in builder.all("RUN") if "pip wheel" in i.value))
    wheel_dir = wheel_dir[wheel_dir.index("--wheel-dir") + 1]
    installs = [w for w in _commands(final) if "install" in w and "pip" in w]
    assert len(installs) == 1
    words = installs[0]
    mount = f"--mount=type=bind,from=builder,source={wheel_dir},target={wheel_dir}"
    assert words[0] == mount  # mounted for this step only: no wheel in any layer
    assert words[1:6] == ["python", "-m", "pip", "install", "--no-cache-dir"]
    assert sorted(words[6:]) == sorted(["--no-index", f"--find-links={wheel_dir}", "pgwarden"])
    # Nothing is copied into the final stage: no wheel, no source, no builder output.
    assert not final.all("COPY") and not final.all("ADD")


def test_final_stage_has_no_build_tools_and_no_pip(final):
    for run in final.all("RUN"):
        assert not re.search(r"\b(apt-get|apt|apk|dnf|yum)\b\s+\S*\s*install", run.value), run.value
        assert not BUILD_TOOLS.search(run.value), run.value
    # pip, setuptools and wheel go after the install, in the same RUN.
    runs = final.all("RUN")
    assert len(runs) == 1
    commands = _commands(final)
    uninstall = [i for i, w in enumerate(commands) if "uninstall" in w]
    install = [i for i, w in enumerate(commands) if "install" in w]
    assert len(uninstall) == 1 and install and uninstall[0] > install[0]
    assert {"pip", "setuptools", "wheel"} <= set(commands[uninstall[0]])


def test_every_pip_in_every_stage_keeps_no_cache():
    pips = [w for stage in stages() for w in _commands(stage)
            if "pip" in w and w.index("pip") + 1 < len(w) and w[w.index("pip") + 1] in ("install", "wheel")]
    assert len(pips) == 2
    for words in pips:
        assert "--no-cache-dir" in words, words


def test_runs_as_a_numeric_non_root_user_matching_the_deployment(final):
    user = final.last("USER")
    assert user is not None
    assert user.line > max(i.line for i in final.all("RUN"))  # nothing runs as root after it
    match = re.fullmatch(r"(\d+)(?::(\d+))?", user.value)
    assert match, f"USER {user.value}: numeric, so the kubelet can enforce runAsNonRoot"
    uid, gid = int(match.group(1)), match.group(2)
    assert uid != 0 and gid != "0"
    pgwarden_security = Example.load().pgwarden["securityContext"]
    assert pgwarden_security["runAsUser"] == uid
    if gid is not None:
        assert pgwarden_security["runAsGroup"] == int(gid)


def test_entrypoint_and_cmd_are_the_contract_and_the_deployment_uses_them(final):
    assert exec_form(final.last("ENTRYPOINT")) == ["pgwarden"]
    assert exec_form(final.last("CMD")) == ["run", "-c", "/etc/pgwarden/pgwarden.yaml"]
    sidecar = Example.load().pgwarden
    assert "command" not in sidecar  # the image's ENTRYPOINT
    assert sidecar["args"] == exec_form(final.last("CMD"))


def _dockerignore() -> tuple[list[str], set[str]]:
    lines = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()]
    patterns = [ln for ln in lines if ln and not ln.startswith("#")]
    return patterns, {p[1:].strip("/") for p in patterns if p.startswith("!")}


def _copied(builder) -> set[str]:
    sources = set()
    for copy in builder.all("COPY"):
        words = [w for w in shlex.split(copy.value) if not w.startswith("--")]
        sources.update(w.strip("/").removeprefix("./") for w in words[:-1])
    return sources


def test_build_context_is_exactly_what_the_builder_copies(builder):
    patterns, allowed = _dockerignore()
    assert patterns[0] == "*"  # an allow-list: .venv, .git, tests, keys stay out
    copied = _copied(builder)
    assert copied == allowed
    for source in copied:
        assert (ROOT / source).exists(), source
    # What is let in again is never a cache or build output.
    assert {"**/__pycache__", "**/*.pyc", "**/*.so"} <= set(patterns)


def test_build_context_has_everything_setup_cfg_needs(builder):
    copied = _copied(builder)
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert {"pyproject.toml", "setup.cfg"} <= copied
    for line in cfg["metadata"].values():
        if line.startswith("file:"):  # long_description = file: README.md
            assert line.removeprefix("file:").strip() in copied
    mapping = {}
    for line in cfg["options"]["package_dir"].strip().splitlines():
        package, _, directory = line.partition("=")
        mapping[package.strip()] = directory.strip()
    for package in cfg["options"]["packages"].split():
        top, _, rest = package.partition(".")
        directory = "/".join([mapping.get(top, top), *rest.split(".")]) if rest else mapping.get(top, top)
        assert (ROOT / directory / "__init__.py").exists(), package
        assert directory.split("/")[0] in copied, f"{package} ({directory}) is not in the build context"
