"""config/alerts.yml: promtool's checks and unit tests, plus what promtool cannot see.

* ``promtool check rules`` and ``promtool test rules tests/rules/*.test.yml`` pass;
* every alert has a promtool case where it must fire and one where it must not, and the scenarios the
  issue names (noise, slow growth, missing data, exporter restart, one process leaking) are covered;
* mutation checks: weakening a rule (dropping the floor, the ratio, ``for:``, the per-pid key, the
  rising check...) makes the unit tests FAIL. Without this, a test file that asserts nothing useful
  (say, exp_alerts: [] everywhere) would pass as well as a good one;
* labels, annotations, the thresholds tables and runbooks in docs/runbooks.md agree with the rules, and
  every alert's runbook_url points at its runbook there;
* every recording-rule name used anywhere is defined, and the example scrape config loads.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests import _promql as pq
from tests._require import require_tool

RULE_TESTS = sorted((pq.ROOT / "tests" / "rules").glob("*.test.yml"))
SCRAPE_EXAMPLE = pq.ROOT / "config" / "prometheus-scrape.example.yml"
SEVERITIES = {"critical", "warning", "info"}


def promtool(*args: str, cwd: Path = pq.ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("promtool"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False)


def test_promtool_check_rules() -> None:
    proc = promtool("check", "rules", str(pq.RULES))
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr


def test_promtool_unit_tests_pass() -> None:
    assert len(RULE_TESTS) >= 3
    proc = promtool("test", "rules", *map(str, RULE_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == len(RULE_TESTS), proc.stdout


def _cases(paths: list[Path] = RULE_TESTS) -> list[dict[str, object]]:
    return [case for path in paths for case in yaml.safe_load(path.read_text())["tests"]]


def fire_and_quiet(paths: list[Path]) -> tuple[set[str], set[str]]:
    """The alerts some case of ``paths`` expects to fire, and those some case expects to stay quiet."""
    fire: set[str] = set()
    quiet: set[str] = set()
    for case in _cases(paths):
        for check in case.get("alert_rule_test", []):  # type: ignore[attr-defined]
            (fire if check["exp_alerts"] else quiet).add(check["alertname"])
    return fire, quiet


def test_every_alert_has_must_fire_and_must_not_fire_cases() -> None:
    fire, quiet = fire_and_quiet(RULE_TESTS)
    names = {a["alert"] for a in pq.alerts()}
    assert names - fire == set(), "alerts never expected to fire"
    assert names - quiet == set(), "alerts never expected to stay quiet"


@pytest.mark.parametrize("scenario", ["noise", "slow growth", "missing data", "exporter restart",
                                      "one process leaking while others are stable", "new pid"])
def test_required_scenarios_are_covered(scenario: str) -> None:
    assert any(scenario in str(case["name"]) for case in _cases())


# (what is weakened, test files (glob) that must catch it, text in alerts.yml, replacement)
MUTATIONS = [
    ("spike floor", "spikes", "vector(100)", "vector(1)"),
    ("spike ratio", "spikes_day", "vector(3)\n        labels: {threshold: close_wait_spike_ratio}",
     "vector(0)\n        labels: {threshold: close_wait_spike_ratio}"),
    ("spike for", "spikes", "for: 10m", "for: 1m"),
    ("syn_sent floor", "spikes", "vector(20)\n        labels: {threshold: syn_sent", "vector(1)\n        "
     "labels: {threshold: syn_sent"),
    ("baseline not offset", "spikes", "offset 1h)", ")"),
    ("leak keyed on process only", "leak", "by (job, instance, pid, process) (socket_process",
     "by (job, instance, process) (socket_process"),
    ("leak rising check", "leak", "and process:socket_close_wait:rising\n", "and on() vector(1)\n"),
    ("leak growth", "leak", "vector(10)", "vector(1)"),
    ("leak includes pid=other", "leak", 'pid!="other"', 'pid!=""'),
    ("leak for", "leak", "for: 15m", "for: 1m"),
    ("failure ratio", "exporter_health", "vector(0.1)", "vector(0.6)"),
    ("failure not averaged", "exporter_health", "1 - avg_over_time(socket_scrape_collector_success[5m])",
     "1 - socket_scrape_collector_success"),
    ("down for", "exporter_health", "for: 5m\n", "for: 0m\n"),
    ("folding for", "exporter_health", "for: 1h\n", "for: 0m\n"),
    ("folding as a level", "exporter_health", "(increase(socket_exporter_series_folds_total[30m])) > 0",
     "(socket_exporter_series_folds_total) > 0"),
    ("listen queue not against its limit", "listeners",
     "socket_listen_queue_length >= socket_listen_queue_limit and", "socket_listen_queue_length >= 0 and"),
    ("listen backlog-0 counted full", "listeners", "and socket_listen_queue_length > 0)", ")"),
    ("listen drops floor", "listeners", "vector(5)\n", "vector(0.5)\n"),
    ("listen drops as a level", "listeners", "increase(socket_listen_drops_total[5m])\n",
     "socket_listen_drops_total\n"),
    ("listen for", "listeners", 'for: 5m\n        labels:\n          severity: warning\n        annotations:\n'
     '          summary: "Listener', 'for: 1m\n        labels:\n          severity: warning\n        annotations:\n'
     '          summary: "Listener'),
    ("ephemeral ratio", "listeners", "vector(0.75)", "vector(0.3)"),
    ("ephemeral for", "listeners", 'for: 5m\n        labels:\n          severity: warning\n        annotations:\n'
     '          summary: "Ephemeral', 'for: 0m\n        labels:\n          severity: warning\n        annotations:\n'
     '          summary: "Ephemeral'),
    ("pod leak rising check", "pod", "and pod:socket_close_wait:rising\n", "and on() vector(1)\n"),
    ("pod leak includes the host", "pod", 'status="CLOSE_WAIT", pod_uid="", container_id!=""',
     'status="CLOSE_WAIT", pod_uid=""'),
    ("pod leak keyed on netns", "pod", "sum by (job, instance, pod_uid, pod_namespace, pod_name, container_id) "
     "(socket_namespace_connections{status=\"CLOSE_WAIT\", pod_uid!=\"\"})",
     "sum by (job, instance, netns) (socket_namespace_connections{status=\"CLOSE_WAIT\", pod_uid!=\"\"})"),
    ("pod spike without its ratio", "pod", "and pod:socket_syn_sent:sum\n", "or pod:socket_syn_sent:sum\n"),
]


@pytest.mark.parametrize("what,test_file,old,new", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_weakened_rule_fails_the_unit_tests(tmp_path: Path, what: str, test_file: str, old: str, new: str) -> None:
    rules = pq.RULES.read_text()
    assert old in rules, f"mutation {what!r} no longer applies: update MUTATIONS"
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "alerts.yml").write_text(rules.replace(old, new))
    (tmp_path / "tests" / "rules").mkdir(parents=True)
    tests = [shutil.copy(t, tmp_path / "tests" / "rules") for t in RULE_TESTS if t.match(f"{test_file}.test.yml")]
    assert tests and promtool("check", "rules", "config/alerts.yml", cwd=tmp_path).returncode == 0
    proc = promtool("test", "rules", *map(str, tests), cwd=tmp_path)
    assert proc.returncode != 0, f"weakening the {what} went unnoticed by {test_file}.test.yml"
    assert "FAILED" in proc.stdout + proc.stderr


def test_alerts_are_labelled_and_annotated() -> None:
    for alert in pq.alerts():
        name, notes = alert["alert"], alert.get("annotations", {})
        assert alert["labels"]["severity"] in SEVERITIES, name
        assert set(notes) >= {"summary", "description"}, name
        assert "$value" in notes["description"], f"{name}: description must give the value"
        where = "$labels.instance" if "absent(" not in alert["expr"] else "instance: none"
        assert where in notes["summary"] + notes["description"], f"{name}: must name the instance"
        if "pid" in alert["expr"]:
            assert "$labels.process" in notes["summary"] and "$labels.pid" in notes["summary"], name
        if "Spike" in name:
            assert "socket_process_connections" in notes["description"], f"{name}: must name the top process"


def _doc_table(first_column: str, doc: Path = pq.DOCS) -> dict[str, list[str]]:
    """Rows of the tables of ``doc`` whose header starts with ``first_column``, by first cell."""
    rows: dict[str, list[str]] = {}
    inside = False
    for line in doc.read_text().splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if line.startswith("| " + first_column + " |"):
            inside = True
        elif inside and line.startswith("|") and not set(cells[0]) <= set("- "):
            rows[cells[0]] = cells[1:]
        elif inside and not line.startswith("|"):
            inside = False
    return rows


def test_thresholds_are_documented_with_their_values() -> None:
    documented = {name: float(cells[0]) for name, cells in _doc_table("threshold").items()}
    assert documented == pq.thresholds()


def test_alert_table_matches_severity_and_for() -> None:
    documented = {name: cells[:2] for name, cells in _doc_table("alert").items()}
    actual = {a["alert"]: [a["labels"]["severity"], a["for"]] for a in pq.alerts()}
    assert documented == actual


def test_every_alert_has_a_runbook() -> None:
    headings = re.findall(r"^## ((?:Fleet)?Socket\w+)$", pq.DOCS.read_text(), re.M)
    assert sorted(headings) == sorted(a["alert"] for a in pq.alerts() + pq.alerts(pq.FLEET_ALERTS))


def test_every_alert_links_its_runbook() -> None:
    """runbook_url: one absolute base (docs/runbooks.md "Runbook links" says how to change it) and the
    anchor of the alert's own ``## AlertName`` heading, which must exist."""
    headings = set(re.findall(r"^## (\S+)$", pq.DOCS.read_text(), re.M))
    bases = set()
    for alert in pq.alerts() + pq.alerts(pq.FLEET_ALERTS):
        url = alert["annotations"].get("runbook_url", "")
        m = re.fullmatch(r"(https://[^/\s]+/\S*)docs/runbooks\.md#([a-z0-9-]+)", url)
        assert m, f"{alert['alert']}: runbook_url {url!r}"
        bases.add(m[1])
        assert m[2] == alert["alert"].lower() and alert["alert"] in headings, alert["alert"]
    assert len(bases) == 1, f"one base URL for every alert: {bases}"


def test_recording_rules_used_are_defined() -> None:
    recorded = {r["record"] for r in pq.load_rules() if "record" in r}
    used = {name for name in pq.all_named_metrics() if ":" in name}
    assert used - recorded == set()
    assert "process:socket_close_wait:rising" in used  # the extractor does see recorded names
    assert len(pq.annotation_queries()) == pq.RULES.read_text().count("printf `") > 0


def test_metric_name_extraction() -> None:
    assert pq.metric_names('sum by (status) (x{job="a:b"}) / on() group_left() y:z offset 1h') == {"x", "y:z"}
    assert pq.metric_names("topk(10, max_over_time(rate(c_total[5m])[1h:]))") == {"c_total"}
    assert pq.metric_names("vector(100) and absent(up{job=\"s\"})") == {"up"}


def test_example_scrape_config_loads_the_rules(tmp_path: Path) -> None:
    """promtool checks the example with its rule_files entry pointed at this repo's rule file."""
    config = yaml.safe_load(SCRAPE_EXAMPLE.read_text())
    assert [j["job_name"] for j in config["scrape_configs"]] == ["socket_exporter"]
    assert all('up{job="socket_exporter"}' in a["expr"] for a in pq.alerts() if "up{" in a["expr"])
    config["rule_files"] = [str(pq.RULES)]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert proc.returncode == 0 and f"{len(pq.load_rules())} rules found" in proc.stdout, proc.stdout + proc.stderr
