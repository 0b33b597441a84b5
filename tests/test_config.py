"""Config loading: the shipped default, every refusal as one line naming file, key and value.

Each bad config is a file under fixtures/config/ whose first line says the error it must produce
(`# expect: ...`); the empty file cannot carry one, so its expectation is here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from exporter.settings.config import Config, ConfigError, load_config, parse_config, with_overrides

ROOT = Path(__file__).resolve().parent.parent
BAD = sorted((ROOT / "tests/fixtures/config").glob("*.yml"))
EXPECT_WITHOUT_COMMENT = {"empty.yml": "file is empty; want a mapping with at least `kinds:`"}


def expected_error(path: Path) -> str:
    text = path.read_text()
    if text.startswith("# expect: "):
        return text.splitlines()[0].removeprefix("# expect: ")
    return EXPECT_WITHOUT_COMMENT[path.name]


def test_shipped_config_equals_builtin_defaults() -> None:
    assert load_config(str(ROOT / "config/socket_exporter.yml")) == Config()


@pytest.mark.parametrize("path", BAD, ids=[p.name for p in BAD])
def test_bad_config_is_refused_with_one_line(path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(str(path))
    message = str(exc.value)
    assert message.startswith(f"{path}: "), message
    assert expected_error(path) in message
    assert "\n" not in message


@pytest.mark.parametrize("path", BAD[:3], ids=[p.name for p in BAD[:3]])
def test_cli_config_check_exits_2_with_one_line(path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "exporter", "--config", str(path), "--config.check"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and expected_error(path) in lines[0] and str(path) in lines[0]


def test_cli_config_check_accepts_shipped_config() -> None:
    proc = subprocess.run([sys.executable, "-m", "exporter", "--config", "config/socket_exporter.yml",
                           "--config.check"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "config OK" in proc.stdout


def test_missing_file_and_oversized_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path / "nope.yml"))
    big = tmp_path / "big.yml"
    big.write_text("# " + "x" * 70000 + "\nkinds: [tcp]\n")
    with pytest.raises(ConfigError, match="larger than"):
        load_config(str(big))


def test_valid_config_and_flag_overrides() -> None:
    config = parse_config("kinds: [tcp4, unix]\nsource: proc\nper_process: {labels: [process], max_owners: 3}\n",
                          "t.yml")
    assert config.kinds == ("tcp4", "unix") and config.source == "proc"
    assert config.per_process.labels == ("process",) and config.per_process.max_owners == 3
    overridden = with_overrides(config, source="netlink", procfs=None)
    assert overridden.source == "netlink" and overridden.procfs == "/proc"


def test_bad_flag_value_is_refused() -> None:
    proc = subprocess.run([sys.executable, "-m", "exporter", "--web.listen-address", "nowhere", "--config.check"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2
    assert "--web.listen-address: got 'nowhere'" in proc.stderr


@pytest.mark.parametrize("value", ["/", "/-/healthy", "/-/reload", "metrics", "/a b", "/m?x=1", "/m#top"])
def test_telemetry_path_from_flag_and_file_is_checked_alike(tmp_path: Path, value: str) -> None:
    """One validator (config.check_telemetry_path): the same refusal, named by flag or by file and key."""
    config = tmp_path / "c.yml"
    config.write_text(f"web: {{telemetry_path: {value!r}}}\n")
    flag = subprocess.run([sys.executable, "-m", "exporter", "--web.telemetry-path", value, "--config.check"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    file = subprocess.run([sys.executable, "-m", "exporter", "--config", str(config), "--config.check"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert flag.returncode == file.returncode == 2, (flag.stderr, file.stderr)
    [flag_line], [file_line] = flag.stderr.splitlines(), file.stderr.splitlines()
    _, _, flag_why = flag_line.partition("--web.telemetry-path: ")
    _, _, file_why = file_line.partition(f"{config}: web.telemetry_path: ")
    assert flag_why and flag_why == file_why and f"got {value!r}" in flag_why, (flag_line, file_line)


def test_collector_flags_switch_views_over_the_file(tmp_path: Path) -> None:
    """``--[no-]collector.<name>`` beats ``<name>.enabled`` in the file, both ways (node_exporter's flags)."""
    from exporter.cli import build_parser, resolve_config

    cfg = tmp_path / "c.yml"
    cfg.write_text("listeners: {enabled: true}\nlimits: {max_series: 2000}\n")
    args = build_parser().parse_args(["--config", str(cfg), "--no-collector.listeners", "--collector.ports",
                                      "--no-collector.per_process", "--limits.max-series", "0"])
    config = resolve_config(args)
    assert (config.listeners.enabled, config.ports.enabled, config.per_process.enabled) == (False, True, False)
    assert config.ephemeral.enabled is False and config.limits.max_series == 0
    assert resolve_config(build_parser().parse_args(["--config", str(cfg)])).limits.max_series == 2000


def test_cli_collector_flags_change_the_exposition() -> None:
    def families(*flags: str) -> set[str]:
        proc = subprocess.run([sys.executable, "-m", "exporter", "--once", *flags], capture_output=True, text=True,
                              cwd=ROOT, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return {line.split()[2] for line in proc.stdout.splitlines() if line.startswith("# TYPE")}

    on = families("--collector.listeners", "--collector.ephemeral")
    off = families("--no-collector.per_process")
    assert {"socket_listen_queue_length", "socket_ephemeral_port_range_size", "socket_process_connections"} <= on
    assert "socket_process_connections" not in off and "socket_listen_queue_length" not in off
    assert "socket_exporter_series" in off


def test_cli_bad_max_series_flag_is_one_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "exporter", "--limits.max-series", "12", "--config.check"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "--limits.max-series: got 12; want 0 (no limit)" in proc.stderr
