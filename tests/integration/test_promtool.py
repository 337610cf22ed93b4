"""The monitoring rules and Prometheus configurations, checked by promtool (issue #11).

promtool comes with Debian's `prometheus` package, which `authbus_dev.prometheus.ensure()`
fetches and unpacks into `.cache/tools/` when it is not there yet (hence the integration
tier: the first run downloads it). Each rule file has its unit tests in
`deploy/prometheus/tests/`: every alert fires on synthetic series that should page or open a
ticket, and stays quiet on their healthy twins.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from authbus_dev import prometheus

CONFIGS = ("prometheus.yml", "prometheus.local.yml")  # compose's, and a local fleet's


def promtool(*args: str) -> str:
    done = prometheus.promtool(*args)
    output = f"{done.stdout}\n{done.stderr}"
    assert done.returncode == 0, output
    return output


def test_promtool_finds_no_fault_in_the_rules() -> None:
    files = [str(path) for path in prometheus.rule_files()]
    assert files

    output = promtool("check", "rules", *files)

    assert output.count("SUCCESS") == len(files)


def test_promtool_rule_unit_tests_pass() -> None:
    tests = [str(path) for path in prometheus.rule_tests()]
    assert tests

    output = promtool("test", "rules", *tests)

    assert "FAILED" not in output
    assert output.count("SUCCESS") == len(tests)


@pytest.mark.parametrize("name", CONFIGS)
def test_prometheus_config_is_valid_and_loads_every_rule_file(name: str) -> None:
    output = promtool("check", "config", str(prometheus.DEPLOY / name))

    assert f"SUCCESS: {len(prometheus.rule_files())} rule files found" in output


def test_a_broken_rule_fails_the_check(tmp_path: Path) -> None:
    """The checks above mean something: promtool exits non-zero on a PromQL error."""
    broken = tmp_path / "broken.yml"
    broken.write_text(BROKEN_RULE)

    done = prometheus.promtool("check", "rules", str(broken))

    assert done.returncode != 0
    assert "parse error" in done.stdout + done.stderr


BROKEN_RULE = """\
groups:
  - name: broken
    rules:
      - record: job:api_http_requests:rate5m
        expr: sum by (job) (rate(api_http_requests_total[5m])
"""
