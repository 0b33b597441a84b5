"""config/recording.yml and config/fleet-alerts.yml: promtool, and what promtool cannot see.

* ``promtool check rules`` passes for both, and their unit tests (tests/rules/fleet_*.test.yml) pass;
* no series name is recorded by both recording.yml and alerts.yml: one Prometheus loads both (a
  Prometheus does not refuse two rules recording one name; it silently overwrites one with the other);
* the roll-ups keep only job and instance (and status), and the fleet alerts read only recorded series
  of recording.yml, so the global tier needs nothing else;
* every fleet alert has a case where it must fire and one where it must not, and weakening a rule
  makes its unit tests FAIL (mutations, as tests/test_rules.py does for alerts.yml);
* the fleet alerts use alerts.yml's thresholds and durations, and docs/fleet.md documents them
  (their runbooks: tests/test_rules.py).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import _promql as pq
from tests.test_readme import section
from tests.test_rules import _doc_table, fire_and_quiet, promtool

FLEET_TESTS = sorted((pq.ROOT / "tests" / "rules").glob("fleet_*.test.yml"))
#: Fleet alert -> (its counterpart in alerts.yml, the thresholds of alerts.yml it writes out).
COUNTERPART = {
    "FleetSocketCloseWaitSpike": ("SocketCloseWaitSpike", ("close_wait_spike_min_sockets", "close_wait_spike_ratio")),
    "FleetSocketCloseWaitLeak": ("SocketCloseWaitLeak", ("close_wait_leak_min_sockets", "close_wait_leak_min_growth")),
    "FleetSocketSynSentSpike": ("SocketSynSentSpike", ("syn_sent_spike_min_sockets", "syn_sent_spike_ratio")),
    "FleetSocketListenerSaturated": ("SocketListenerSaturated", ("listen_drops_min",)),
    "FleetSocketEphemeralPortsExhausting": ("SocketEphemeralPortsExhausting", ("ephemeral_max_use_ratio",)),
    "FleetSocketExporterBlind": ("SocketExporterCollectorFailing", ("collector_max_failure_ratio",)),
}
#: Numbers in the fleet expressions that are structure, not thresholds: 0 and 1 (a count above 0, a
#: failure share 1 - success) and 300 (a rate per second times 5 minutes).
STRUCTURAL = {0.0, 1.0, 300.0}
FORBIDDEN_LABELS = {"pid", "process", "pod_uid", "pod_namespace", "pod_name", "container_id", "netns", "port",
                    "family", "type", "collector"}


def records(path: Path) -> list[str]:
    return [r["record"] for r in pq.load_rules(path) if "record" in r]


def test_promtool_check_rules_is_clean() -> None:
    proc = promtool("check", "rules", str(pq.RECORDING), str(pq.FLEET_ALERTS))
    assert proc.returncode == 0 and proc.stdout.count("SUCCESS") == 2, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stdout + proc.stderr


def test_promtool_unit_tests_pass() -> None:
    assert [p.name for p in FLEET_TESTS] == ["fleet_alerts.test.yml", "fleet_recording.test.yml"]
    proc = promtool("test", "rules", *map(str, FLEET_TESTS))
    assert proc.returncode == 0 and proc.stdout.count("SUCCESS") == 2, proc.stdout + proc.stderr


def test_no_series_is_recorded_by_both_files(tmp_path: Path) -> None:
    fleet, local = records(pq.RECORDING), records(pq.RULES)
    assert len(fleet) == len(set(fleet)) == 7
    assert set(fleet) & set(local) == set()
    assert not pq.alerts(pq.RECORDING) and not records(pq.FLEET_ALERTS), "rules and alerts apart"
    config = {"rule_files": [str(pq.RULES), str(pq.RECORDING)]}  # what the scraping Prometheus loads
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 rule files found" in proc.stdout and f"{len(fleet)} rules found" in proc.stdout


def test_names_follow_the_level_metric_operations_convention() -> None:
    """The level names the labels an output keeps besides job: ``instance``, ``instance_status``."""
    for rule in pq.load_rules(pq.RECORDING):
        level, metric, operations = rule["record"].split(":")
        assert level.split("_")[0] == "instance" and metric.startswith("socket_") and operations, rule["record"]
        by = re.search(r"\bby\s*\(([^)]*)\)", rule["expr"])  # the outer grouping comes first
        kept = {label.strip() for label in by.group(1).split(",")} - {"job"} if by else {"instance"}
        assert kept == set(level.split("_")), rule["record"]


def test_roll_ups_aggregate_to_job_and_instance() -> None:
    """Every expression's outer aggregation keeps job and instance (status on the counts) and nothing
    else; the promtool cases check the output labels on real input with netns and pod labels."""
    for rule in pq.load_rules(pq.RECORDING):
        groupings = re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", rule["expr"])
        assert groupings, rule["record"]
        outer = {label.strip() for label in groupings[0].split(",")}
        expected = {"job", "instance", "status"} if rule["record"].endswith("connections:sum") else {"job", "instance"}
        if "without (status)" in rule["expr"]:  # built on the previous roll-up, which is by (job, instance, status)
            expected = {"status"}
        assert outer == expected, rule["record"]
        assert not FORBIDDEN_LABELS & outer


def test_fleet_alerts_read_only_recorded_series() -> None:
    recorded = set(records(pq.RECORDING))
    for alert in pq.alerts(pq.FLEET_ALERTS):
        used = pq.metric_names(alert["expr"])
        assert used and used <= recorded, f"{alert['alert']} reads {used - recorded}"
    queries = pq.annotation_queries(path=pq.FLEET_ALERTS)
    assert queries and all(pq.metric_names(q) <= recorded for q in queries)


def test_every_fleet_alert_has_must_fire_and_must_not_fire_cases() -> None:
    fire, quiet = fire_and_quiet(FLEET_TESTS)
    names = {a["alert"] for a in pq.alerts(pq.FLEET_ALERTS)}
    assert names == set(COUNTERPART)
    assert names - fire == set() and names - quiet == set()


def _numbers(expr: str) -> set[float]:
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]|offset \w+|\w+:\w+:\w+", " ", expr)
    return {float(n) for n in re.findall(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])", text)}


def test_fleet_alerts_use_the_thresholds_and_durations_of_alerts_yml() -> None:
    local = {a["alert"]: a for a in pq.alerts()}
    thresholds = pq.thresholds()
    for alert in pq.alerts(pq.FLEET_ALERTS):
        twin, names = COUNTERPART[alert["alert"]]
        assert _numbers(alert["expr"]) - STRUCTURAL == {thresholds[n] for n in names}, alert["alert"]
        assert (alert["for"], alert["labels"]) == (local[twin]["for"], local[twin]["labels"]), alert["alert"]
        notes = alert["annotations"]
        assert set(notes) == {"summary", "description", "runbook_url"}, alert["alert"]
        assert "$value" in notes["description"], alert["alert"]
        assert "$labels.instance" in notes["summary"] and "$labels.job" in notes["description"], alert["alert"]


# (what is weakened, rule file, test file, text in the rule file, replacement)
MUTATIONS = [
    ("counts keep family", pq.RECORDING, "fleet_recording", "sum by (job, instance, status) (socket_connections",
     "sum by (job, instance, status, family) (socket_connections"),
    ("counts take every status", pq.RECORDING, "fleet_recording",
     'status=~"CLOSE_WAIT|SYN_SENT|TIME_WAIT|ESTABLISHED"', 'status!=""'),
    ("fill against the limit, not what the queue holds", pq.RECORDING, "fleet_recording",
     "(socket_listen_queue_limit + 1)", "socket_listen_queue_limit"),
    ("idle backlog-0 listener counted saturated", pq.RECORDING, "fleet_recording",
     "* (socket_listen_queue_length > bool 0)", ""),
    ("saturated counted by netns", pq.RECORDING, "fleet_recording",
     "sum by (job, instance) (\n            (socket_listen",
     "sum by (job, instance, netns) (\n            (socket_listen"),
    ("ephemeral keeps netns", pq.RECORDING, "fleet_recording", "max by (job, instance) (socket_ephemeral",
     "max by (job, instance, netns) (socket_ephemeral"),
    ("drops as a level", pq.RECORDING, "fleet_recording", "rate(socket_listen_drops_total[5m])",
     "socket_listen_drops_total"),
    ("a down target is not blind", pq.RECORDING, "fleet_recording",
     '\n          or min by (job, instance) (up{job="socket_exporter"})', ""),
    ("spike floor", pq.FLEET_ALERTS, "fleet_alerts", 'CLOSE_WAIT"} >= 100', 'CLOSE_WAIT"} >= 1'),
    ("spike ratio", pq.FLEET_ALERTS, "fleet_alerts",
     '>= 3 * avg_over_time(instance_status:socket_connections:sum{status="CLOSE',
     '>= 0 * avg_over_time(instance_status:socket_connections:sum{status="CLOSE'),
    ("spike baseline not offset", pq.FLEET_ALERTS, "fleet_alerts", 'CLOSE_WAIT"}[1h] offset 1h)', 'CLOSE_WAIT"}[1h])'),
    ("spike for", pq.FLEET_ALERTS, "fleet_alerts", 'for: 10m\n        labels:\n          severity: warning\n'
     '        annotations:\n          summary: "CLOSE_WAIT spike', 'for: 1m\n        labels:\n          severity: '
     'warning\n        annotations:\n          summary: "CLOSE_WAIT spike'),
    ("leak rising check", pq.FLEET_ALERTS, "fleet_alerts",
     "          and (avg_over_time(instance_status:socket_connections:sum"
     '{status="CLOSE_WAIT"}[15m] offset 15m)\n', "          or (avg_over_time(instance_status:socket_connections:sum"
     '{status="CLOSE_WAIT"}[15m] offset 15m)\n'),
    ("leak growth", pq.FLEET_ALERTS, "fleet_alerts", "offset 45m)) >= 10", "offset 45m)) >= 1"),
    ("leak for", pq.FLEET_ALERTS, "fleet_alerts", "for: 15m", "for: 1m"),
    ("syn_sent floor", pq.FLEET_ALERTS, "fleet_alerts", 'SYN_SENT"} >= 20', 'SYN_SENT"} >= 1'),
    ("syn_sent ratio", pq.FLEET_ALERTS, "fleet_alerts",
     '>= 3 * avg_over_time(instance_status:socket_connections:sum{status="SYN',
     '>= 0 * avg_over_time(instance_status:socket_connections:sum{status="SYN'),
    ("listener drops floor", pq.FLEET_ALERTS, "fleet_alerts", "* 300 >= 5", "* 300 >= 1"),
    ("listener full queues only", pq.FLEET_ALERTS, "fleet_alerts",
     "\n          or instance:socket_listen_drops:rate5m * 300 >= 5", ""),
    ("listener for", pq.FLEET_ALERTS, "fleet_alerts", 'for: 5m\n        labels:\n          severity: warning\n'
     '        annotations:\n          summary: "Saturated', 'for: 0m\n        labels:\n          severity: warning\n'
     '        annotations:\n          summary: "Saturated'),
    ("ephemeral ratio", pq.FLEET_ALERTS, "fleet_alerts", ">= 0.75", ">= 0.3"),
    ("blind ratio", pq.FLEET_ALERTS, "fleet_alerts", "> 0.1", "> 0.5"),
    ("blind for", pq.FLEET_ALERTS, "fleet_alerts", "for: 10m\n        labels:\n          severity: warning\n"
     '        annotations:\n          summary: "socket_exporter', "for: 1m\n        labels:\n          severity: "
     'warning\n        annotations:\n          summary: "socket_exporter'),
]


@pytest.mark.parametrize("what,rules,test_file,old,new", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_weakened_rule_fails_the_unit_tests(tmp_path: Path, what: str, rules: Path, test_file: str, old: str,
                                            new: str) -> None:
    text = rules.read_text()
    assert text.count(old) == 1, f"mutation {what!r} no longer applies: update MUTATIONS"
    (tmp_path / "config").mkdir()
    for path in (pq.RECORDING, pq.FLEET_ALERTS):
        (tmp_path / "config" / path.name).write_text(text.replace(old, new) if path == rules else path.read_text())
    (tmp_path / "tests" / "rules").mkdir(parents=True)
    test = shutil.copy(pq.ROOT / "tests" / "rules" / f"{test_file}.test.yml", tmp_path / "tests" / "rules")
    assert promtool("check", "rules", f"config/{rules.name}", cwd=tmp_path).returncode == 0, what
    proc = promtool("test", "rules", str(test), cwd=tmp_path)
    assert proc.returncode != 0, f"weakening the {what} went unnoticed by {test_file}.test.yml"
    assert "FAILED" in proc.stdout + proc.stderr


# ---- docs/fleet.md --------------------------------------------------------------------------------------
FLEET_DOC = "docs/fleet.md"


def yaml_blocks() -> list[dict[str, Any]]:
    return [yaml.safe_load(b) for b in re.findall(r"^```yaml\n(.*?)^```", section("Running a fleet", FLEET_DOC),
                                                  re.M | re.S)]


def test_readme_documents_every_fleet_alert() -> None:
    documented = {name: cells[:2] for name, cells in _doc_table("fleet alert", pq.ROOT / FLEET_DOC).items()}
    assert documented == {a["alert"]: [a["labels"]["severity"], a["for"]] for a in pq.alerts(pq.FLEET_ALERTS)}
    recorded = set(re.findall(r"^\| `(instance(?:_status)?:[^`{]+)", section("Recorded series", FLEET_DOC), re.M))
    assert recorded == set(records(pq.RECORDING))
    cost = section("Cost per host", FLEET_DOC)
    assert "limits.max_series" in cost and "LEAD" not in cost


def test_readme_federation_job_is_the_example_file() -> None:
    (job,) = yaml.safe_load((pq.ROOT / "config" / "prometheus-federate.example.yml").read_text())["scrape_configs"]
    (shown,) = [b for b in yaml_blocks() if "scrape_configs" in b]
    (readme_job,) = shown["scrape_configs"]
    keys = ("job_name", "metrics_path", "honor_labels", "params")
    assert {k: readme_job[k] for k in keys} == {k: job[k] for k in keys}
    (match,) = job["params"]["match[]"]
    assert match == '{__name__=~"instance(_status)?:socket_.+"}'


def test_readme_remote_write_keeps_only_the_roll_ups(tmp_path: Path) -> None:
    (block,) = [b for b in yaml_blocks() if "remote_write" in b]
    (relabel,) = block["remote_write"][0]["write_relabel_configs"]
    assert relabel["action"] == "keep" and relabel["source_labels"] == ["__name__"]
    keep = re.compile(relabel["regex"])  # Prometheus anchors relabel regexes: fullmatch
    assert all(keep.fullmatch(name) for name in records(pq.RECORDING))
    per_pid = [n for n in records(pq.RULES) if not n.startswith(("instance:", "instance_status:"))]
    raw = ["socket_connections", "socket_process_connections", "socket_listen_queue_length", "up"]
    assert per_pid and not [n for n in per_pid + raw if keep.fullmatch(n)]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(block))
    proc = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rule_files = [b for b in yaml_blocks() if "rule_files" in b]
    assert rule_files and len(rule_files[0]["rule_files"]) == 2
