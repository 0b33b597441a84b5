"""``.ci/run`` never stops or kills what it did not start.

It used to run ``systemctl stop prometheus prometheus-node-exporter`` and ``pkill -x prometheus``
after installing Debian's packages, so running the README's test command on a machine with its own
Prometheus stopped that Prometheus. Now the packages' services are kept from starting while apt
installs them (a policy-rc.d answering 101), and nothing is stopped afterwards.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from tests._require import require, require_root, require_tool

ROOT = Path(__file__).resolve().parent.parent
CI_RUN = ROOT / ".ci/run"
#: Commands that stop, kill or disable processes and services by name or at all.
FORBIDDEN = re.compile(r"\b(pkill|killall|kill|service\s+\S+\s+(stop|restart)|invoke-rc\.d|"
                       r"systemctl\s+(\S+\s+)*(stop|kill|restart|disable|mask|isolate))\b")
POLICY = Path("/usr/sbin/policy-rc.d")


def commands(text: str) -> list[str]:
    """The script's lines without comments (a ``#`` that starts a word starts a comment)."""
    return [line for line in (re.sub(r"(^|\s)#.*", "", raw).strip() for raw in text.splitlines()) if line]


def test_ci_run_stops_and_kills_nothing() -> None:
    lines = commands(CI_RUN.read_text())
    assert lines and lines[0].startswith("set -euo pipefail"), lines[:3]
    assert not [line for line in lines if FORBIDDEN.search(line)]
    for old in ("systemctl stop prometheus prometheus-node-exporter >/dev/null 2>&1 || true",
                "pkill -x prometheus >/dev/null 2>&1 || true", "pkill -f prometheus-node-exporter",
                "killall prometheus", "systemctl --quiet stop prometheus", "kill $(pidof prometheus)"):
        assert FORBIDDEN.search(old), f"the check would miss {old!r}"


def install_step(policy: Path, bin_dir: Path) -> str:
    """The script's package step, run on its own: ``need`` set, policy-rc.d moved to ``policy``, and a
    stand-in ``apt-get`` in ``bin_dir`` that records what policy-rc.d answers while it "installs"."""
    text, log = CI_RUN.read_text(), bin_dir / "apt.log"
    log.unlink(missing_ok=True)
    step = text[text.index('if [ "${#need[@]}" -gt 0 ]; then'):]
    step = step[: step.index("\nfi\n") + 4]  # the top-level fi (inner ones are indented)
    assert step.count("/usr/sbin/policy-rc.d") == 1 and "apt-get install" in step
    (bin_dir / "apt-get").write_text(f"""#!/bin/sh
[ "$1" = install ] || exit 0
if [ -x {policy} ]; then {policy} prometheus start; echo "policy answered $?"; else echo "no policy"; fi >>{log}
""")
    (bin_dir / "apt-get").chmod(0o755)
    script = "set -euo pipefail\nneed=(prometheus)\n" + step.replace("/usr/sbin/policy-rc.d", str(policy))
    # what follows the step (pip, then `exec pytest`, which fires no EXIT trap) must find it gone
    script += f"\n[ ! -e {policy} ] || cmp -s {policy} {log}.own || echo 'policy left after apt' >>{log}\n"
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert proc.returncode == 0, proc.stderr
    return log.read_text()


def test_services_are_kept_from_starting_only_while_apt_installs(tmp_path: Path) -> None:
    policy = tmp_path / "policy-rc.d"
    assert install_step(policy, tmp_path) == "policy answered 101\n"
    assert not policy.exists(), "its own policy-rc.d must be removed after apt"
    # a machine's own policy (Docker images ship one) governs the install and is left as it was
    own = "#!/bin/sh\n# the machine's own\nexit 0\n"
    policy.write_text(own)
    policy.chmod(0o755)
    (tmp_path / "apt.log.own").write_text(own)
    assert install_step(policy, tmp_path) == "policy answered 0\n"
    assert policy.read_text() == own


def test_a_running_prometheus_survives_ci_run_setup(tmp_path: Path) -> None:
    """Stand-ins named like the services (copies of ``sleep``: ``pkill -x`` matches the name, ``pkill
    -f`` the command line) and the real ``.ci/run --setup``; both stand-ins must still run after it."""
    require_root()
    for tool in ("ss", "promtool", "prometheus-node-exporter", "curl", "strace", "systemd-analyze", "openssl"):
        require_tool(tool)  # so that the run installs no Debian package (that is CI's first run)
    require((ROOT / ".venv/bin/python").exists(), "needs .venv (python3 -m venv .venv)")
    sleep = shutil.which("sleep")
    assert sleep is not None
    stand_ins = []
    for name in ("prometheus", "prometheus-node-exporter"):
        shutil.copy(sleep, tmp_path / name)
        stand_ins.append(subprocess.Popen([str(tmp_path / name), "600"]))
    policy_before = POLICY.read_bytes() if POLICY.exists() else None
    try:
        time.sleep(0.1)
        assert [p.poll() for p in stand_ins] == [None, None]
        proc = subprocess.run([str(CI_RUN), "--setup"], capture_output=True, text=True, timeout=600,
                              env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"})
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert "== set up" in proc.stdout
        assert [p.poll() for p in stand_ins] == [None, None], "a stand-in was stopped"
        assert (POLICY.read_bytes() if POLICY.exists() else None) == policy_before
    finally:
        for p in stand_ins:
            p.kill()
            p.wait()
