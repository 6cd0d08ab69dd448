"""The operator's command line: the contract's flags and defaults."""

from __future__ import annotations

import json
import logging

import pytest

from taskmaster.shell.operator import _JsonFormatter, parse_args


def test_defaults_are_the_contract_s(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)

    options = parse_args([])

    assert options.namespace == []
    assert options.leader_elect is True
    assert options.lease_name == "taskmaster-operator"
    assert options.lease_namespace == "default"
    assert (options.lease_duration, options.renew_deadline, options.retry_period) == (15, 10, 2)
    assert (options.metrics_port, options.health_port) == (8080, 8081)
    assert options.log_format == "text"
    assert options.webhook_port == 0  # no webhook
    assert options.webhook_cert_dir is None
    assert options.webhook_secret == "taskmaster-operator-webhook-tls"
    assert options.webhook_dns_name == []
    assert options.webhook_configuration is None


def test_lease_namespace_follows_the_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "ops")

    assert parse_args([]).lease_namespace == "ops"


def test_flags() -> None:
    options = parse_args(
        ["--namespace", "a", "--namespace", "b", "--no-leader-elect", "--log-format", "json"]
    )

    assert options.namespace == ["a", "b"]
    assert options.leader_elect is False
    assert options.log_format == "json"


def test_webhook_flags() -> None:
    options = parse_args(
        [
            *("--webhook-port", "9443", "--webhook-secret", "tm-webhook-tls"),
            *("--webhook-dns-name", "tm.ops.svc", "--webhook-dns-name", "127.0.0.1"),
            *("--webhook-configuration", "tm-webhook"),
        ]
    )

    assert options.webhook_port == 9443
    assert options.webhook_secret == "tm-webhook-tls"
    assert options.webhook_dns_name == ["tm.ops.svc", "127.0.0.1"]
    assert options.webhook_configuration == "tm-webhook"
    assert parse_args(["--webhook-port", "9443", "--webhook-cert-dir", "/certs"]).webhook_cert_dir


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--webhook-port", "9443"], "--webhook-dns-name"),
        (["--webhook-port", "70000", "--webhook-dns-name", "x"], "--webhook-port"),
        (["--webhook-port", "-1", "--webhook-dns-name", "x"], "--webhook-port"),
    ],
)
def test_webhook_flags_must_make_sense(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)

    assert complaint in capsys.readouterr().err


def test_lease_timings_must_nest(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--renew-deadline", "20"])

    assert "--renew-deadline" in capsys.readouterr().err


def test_json_logs_are_one_object_a_line() -> None:
    record = logging.LogRecord("taskmaster", logging.INFO, __file__, 1, "hello %s", ("x",), None)

    line = json.loads(_JsonFormatter().format(record))

    assert (line["level"], line["logger"], line["message"]) == ("info", "taskmaster", "hello x")
