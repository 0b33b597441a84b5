"""The image recipe and the Python package, checked without a Docker engine.

No engine runs on our machines, so hadolint lints the Dockerfile and this module replays it: the
build stage's COPY and RUN steps run as written on a copy of the build context (.dockerignore
applied), with the image's own absolute paths (/src, /dist, /opt) moved under a temporary root and a
fresh virtual environment standing in for the base image's interpreter. The runtime stage's
ENTRYPOINT and HEALTHCHECK then run against the result. pip reaches PyPI for the dependencies.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from exporter.version import __version__
from tests._certs import make_pki
from tests._http import free_port
from tests._require import require_module, require_tool
from tests.test_deploy_manifests import exporter_server, get

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()
SYSTEM_DIRS = {"usr", "bin", "sbin", "etc", "lib", "proc", "dev", "sys", "var", "tmp", "host", "nonexistent"}
NOT_REPLAYED = {"FROM", "ARG", "LABEL", "EXPOSE", "USER", "HEALTHCHECK", "ENTRYPOINT"}
BUILD_INFO = re.compile(r'^socket_exporter_build_info\{[^}]*\bversion="([^"]+)"', re.M)


@dataclass
class Step:
    stage: int
    op: str
    args: str


def parse_dockerfile(text: str) -> list[Step]:
    """Instructions with continuation lines joined and comments dropped; stage -1 is before FROM."""
    steps, stage, pending = [], -1, ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        op, _, args = (pending + line).partition(" ")
        pending = ""
        stage += op.upper() == "FROM"
        steps.append(Step(stage, op.upper(), args.strip()))
    return steps


STEPS = parse_dockerfile(DOCKERFILE)
FINAL = max(s.stage for s in STEPS)


def of(op: str, stage: int | None = None) -> list[str]:
    return [s.args for s in STEPS if s.op == op and (stage is None or s.stage == stage)]


def expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m[1], ""), text)


def assignments(args: str, env: dict[str, str]) -> dict[str, str]:
    """ENV/ARG/LABEL key=value pairs, values expanded against ``env``."""
    return {k: expand(v, env) for k, _, v in (t.partition("=") for t in shlex.split(args))}


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    rx = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    parts = re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/"))
    return re.compile("".join(rx.get(p, re.escape(p)) for p in parts) + r"\Z")


def build_context(root: Path) -> list[str]:
    """Files docker would send: .dockerignore rules in order, the last match wins, a rule matching a
    parent directory matches what is under it."""
    rules = [(r.startswith("!"), _ignore_regex(r.lstrip("!"))) for r in
             (line.strip() for line in (root / ".dockerignore").read_text().splitlines())
             if r and not r.startswith("#")]
    kept = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            parts = (Path(dirpath) / name).relative_to(root).parts
            prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
            excluded = False
            for negate, rx in rules:
                if any(rx.match(p) for p in prefixes):
                    excluded = not negate
            if not excluded:
                kept.append("/".join(parts))
    return sorted(kept)


@dataclass
class Image:
    root: Path
    entrypoint: list[str]
    healthcheck: list[str]
    env: dict[str, str]


def _image_roots() -> str:
    paths = re.findall(r"(?<![\w.$/-])/([\w.-]+)", " ".join(s.args for s in STEPS if s.op != "LABEL"))
    return "|".join(sorted(set(paths) - SYSTEM_DIRS))


def _run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False, **kw)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    """The Dockerfile's build replayed; see the module docstring."""
    top = tmp_path_factory.mktemp("image")
    root, roots = top / "root", _image_roots()
    context = build_context(ROOT)

    def at(text: str) -> str:
        return re.sub(rf"(?<![\w.$/-])/({roots})(?![\w.-])", lambda m: f"{root}/{m[1]}", text)

    base = top / "base-python"
    assert _run([sys.executable, "-m", "venv", str(base)]).returncode == 0
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{base}/bin:{env['PATH']}"
    workdir, image_env = root, dict(env)
    for step in STEPS:
        if step.stage < 0 or step.op in NOT_REPLAYED:
            continue
        if step.op == "WORKDIR":
            workdir = Path(at(step.args))
            workdir.mkdir(parents=True, exist_ok=True)
        elif step.op == "ENV":
            (env if step.stage < FINAL else image_env).update(assignments(at(step.args), env))
        elif step.op == "COPY" and step.args.startswith("--from="):
            _, src, dest = shlex.split(step.args)  # same path in both stages: already in place here
            assert src == dest and Path(at(src)).is_dir(), f"COPY {step.args}: not made by the build stage"
        elif step.op == "COPY":
            *srcs, dest = shlex.split(step.args)
            for src in srcs:
                files = [f for f in context if f == src or f.startswith(src.rstrip("/") + "/")]
                assert files, f"COPY {src}: not in the build context (.dockerignore?)"
                for f in files:  # a directory's contents go into dest; a file into dest/ or as dest
                    if f != src:
                        target = workdir / dest / Path(f).relative_to(src.rstrip("/"))
                    else:
                        target = workdir / dest / Path(f).name if dest.endswith("/") else workdir / dest
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(ROOT / f, target)
        elif step.op == "RUN" and step.stage < FINAL:
            proc = _run(["/bin/sh", "-c", at(step.args)], cwd=workdir, env=env)
            assert proc.returncode == 0, f"RUN {step.args}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        elif step.op == "RUN":
            for part in step.args.split("&&"):
                assert re.match(r"\s*(groupadd|useradd) ", part), f"runtime RUN not replayable: {part}"
        else:
            pytest.fail(f"{step.op} {step.args}: the replay does not know this instruction")
    entrypoint = [at(a) for a in json.loads(of("ENTRYPOINT", FINAL)[-1])]
    check = json.loads(of("HEALTHCHECK", FINAL)[-1].split(" CMD ", 1)[1])
    return Image(root, entrypoint, [at(a) for a in check], image_env)


def test_hadolint_passes_the_dockerfile_and_catches_a_bad_one() -> None:
    hadolint = require_tool("hadolint")
    proc = _run([hadolint, "--no-color", "Dockerfile"], cwd=ROOT)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")
    bad = _run([hadolint, "--no-color", "-"], input="FROM python:latest\nRUN pip install requests\n")
    assert bad.returncode != 0 and "DL3007" in bad.stdout and "DL3013" in bad.stdout


def test_dockerfile_shape() -> None:
    args = assignments(" ".join(of("ARG", -1)), {})
    bases = [expand(b.split()[0], args) for b in of("FROM")]
    assert len(bases) >= 2, "multi-stage: build and runtime"
    assert all(re.fullmatch(r"python:\d+\.\d+\.\d+-slim(-\w+)?", b) for b in bases), bases
    user = of("USER", FINAL)[-1].split(":")[0]
    assert user.isdigit() and user != "0", "runs as a numeric non-root user by default"
    assert of("EXPOSE", FINAL) == ["9731/tcp"]
    assert of("ENTRYPOINT", FINAL)[-1].startswith("["), "exec form"
    health = of("HEALTHCHECK", FINAL)[-1]
    entrypoint = json.loads(of("ENTRYPOINT", FINAL)[-1])
    # exec form, no arguments: exporter/healthcheck.py reads the entrypoint's flags (TLS, address)
    assert json.loads(health.split(" CMD ", 1)[1]) == [str(Path(entrypoint[0]).parent / "python"), "-m",
                                                       "exporter.healthcheck"]
    labels = assignments(" ".join(of("LABEL", FINAL)), {"PYTHON_IMAGE": bases[-1], "VERSION": __version__})
    for key in ("title", "description", "version", "licenses", "base.name"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    run_line = DOCKERFILE.split("Full data for the host:", 1)[1].split("\n\n", 1)[0]
    for flag in ("--network host", "--pid host", "--cap-drop ALL", "--cap-add DAC_READ_SEARCH",
                 "--cap-add SYS_PTRACE", "-v /proc:/host/proc:ro", "--path.procfs=/host/proc"):
        assert flag in run_line, flag


def test_build_context_holds_what_the_build_reads_and_nothing_else() -> None:
    context = build_context(ROOT)
    assert {"pyproject.toml", "README.md", "exporter/cli.py", "exporter/py.typed"} <= set(context)
    assert not [f for f in context if f.startswith(("tests/", ".git", "dist/", "config/", ".venv/"))
                or "__pycache__" in f]


def test_image_build_installs_the_wheel_and_runs_once(image: Image) -> None:
    python = Path(image.entrypoint[0]).parent / "python"
    # bcrypt too: the image must serve basic_auth_users (the [auth] extra)
    where = _run([str(python), "-c", "import bcrypt, exporter, importlib.metadata as m; "
                  "print(exporter.__file__); print(m.version('socket-exporter'))"], cwd="/")
    file, version = where.stdout.split()
    assert file.startswith(str(image.root)) and "site-packages" in file, "not the installed wheel"
    assert version == __version__
    assert _run([*image.entrypoint, "--version"]).stdout.strip() == f"socket_exporter {__version__}"
    proc = _run([*image.entrypoint, "--once"], env=image.env, cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert BUILD_INFO.findall(proc.stdout) == [__version__], "build_info disagrees with --version"
    assert re.search(r"^socket_connections\{", proc.stdout, re.M)


def test_image_server_answers_and_its_healthcheck_tells(image: Image) -> None:
    port = free_port()
    # flags given explicitly: on a shared host the check's discovery (one exporter in its mount
    # namespace) would find several; tests/test_healthcheck.py tests discovery in its own namespace
    check = [*image.healthcheck, f"--web.listen-address=127.0.0.1:{port}"]
    with exporter_server([*image.entrypoint, f"--web.listen-address=127.0.0.1:{port}"], port, image.env):
        assert get(port, "/-/healthy")[0] == 200
        status, body = get(port, "/metrics")
        assert status == 200 and BUILD_INFO.findall(body) == [__version__]
        assert _run(check, env=image.env).returncode == 0
    assert _run(check, env=image.env).returncode != 0, "the healthcheck must fail with the server down"


def test_image_healthcheck_with_tls_and_basic_auth(image: Image, tmp_path: Path) -> None:
    """README's way to keep the HEALTHCHECK working with --web.config.file: credentials in the env."""
    require_module("bcrypt")
    import bcrypt

    pki = make_pki(tmp_path / "pki")
    web = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
    web.write_text(f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n"
                   f"basic_auth_users:\n  healthcheck: '{hashed}'\n")
    port = free_port()
    flags = [f"--web.listen-address=127.0.0.1:{port}", f"--web.config.file={web}"]
    env = {**image.env, "SOCKET_EXPORTER_HEALTHCHECK_USERNAME": "healthcheck",
           "SOCKET_EXPORTER_HEALTHCHECK_PASSWORD": "s3cret"}
    proc = subprocess.Popen([*image.entrypoint, *flags], env=image.env, cwd="/", stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while (ok := _run([*image.healthcheck, *flags], env=env)).returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, ok.stderr
            time.sleep(0.2)
        without = _run([*image.healthcheck, *flags], env=image.env)
        assert without.returncode == 1 and "answered 401" in without.stderr
    finally:
        proc.terminate()
        proc.wait(10)


def test_python_build_makes_an_sdist_and_wheel_that_install_and_run(tmp_path: Path) -> None:
    require_module("build")
    shutil.copytree(ROOT, tmp_path / "src", symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", ".*_cache", ".benchmarks"))
    proc = _run([sys.executable, "-m", "build", "--outdir", str(tmp_path / "out"), str(tmp_path / "src")])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (sdist,), (wheel,) = (tmp_path / "out").glob("*.tar.gz"), (tmp_path / "out").glob("*.whl")
    assert wheel.name == f"socket_exporter-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read(f"socket_exporter-{__version__}.dist-info/METADATA").decode()
        entry = z.read(f"socket_exporter-{__version__}.dist-info/entry_points.txt").decode()
    assert {"exporter/py.typed", "exporter/cli.py", "exporter/version.py"} <= names
    assert "socket-exporter = exporter.cli:main" in entry
    for line in (f"Version: {__version__}", "License-Expression: Apache-2.0", "Requires-Python: >=3.10"):
        assert line in meta.splitlines(), line
    requires = re.findall(r"^Requires-Dist: ([\w.-]+)(?!.*extra ==)", meta, re.M)
    assert {"prometheus-client", "pyroute2", "pyyaml"} <= {r.lower() for r in requires}
    with tarfile.open(sdist) as t:
        members = {m.split("/", 1)[1] for m in t.getnames() if "/" in m}
    assert {"pyproject.toml", "README.md", "exporter/cli.py", "exporter/py.typed"} <= members
    # The wheel's install is what the image replay checks; here the sdist, built again by pip.
    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", str(venv)]).returncode == 0
    proc = _run([str(venv / "bin/pip"), "install", "--no-cache-dir", str(sdist)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = _run([str(venv / "bin/socket-exporter"), "--version"], cwd="/")
    assert out.stdout.strip() == f"socket_exporter {__version__}"
    once = _run([str(venv / "bin/python"), "-m", "exporter", "--once"], cwd="/")
    assert once.returncode == 0 and BUILD_INFO.findall(once.stdout) == [__version__]
