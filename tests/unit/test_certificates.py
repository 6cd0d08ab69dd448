"""Self-signed webhook certificates: issued, reused, renewed, and trusted by a real TLS client."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from taskmaster.shell.certificates import (
    CA_LIFETIME,
    RENEW_BEFORE,
    SERVING_LIFETIME,
    Certificates,
    good_for,
    renew,
)

NAMES = ["taskmaster-webhook.ops.svc", "127.0.0.1"]
NOW = datetime.now(UTC)


def serving(certs: Certificates) -> x509.Certificate:
    return x509.load_pem_x509_certificate(certs.cert)


def cas(certs: Certificates) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(certs.ca)


def test_a_fresh_ca_and_serving_certificate_for_dns_names_and_ips() -> None:
    certs = renew(None, NAMES, NOW)

    cert, [ca] = serving(certs), cas(certs)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["taskmaster-webhook.ops.svc"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert cert.not_valid_after_utc - NOW == pytest.approx(SERVING_LIFETIME, abs=timedelta(1))
    assert ca.not_valid_after_utc - NOW == pytest.approx(CA_LIFETIME, abs=timedelta(1))
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert.verify_directly_issued_by(ca)
    assert good_for(certs, NAMES, NOW)


def test_a_service_name_longer_than_a_common_name_may_be_is_served() -> None:
    # A 40-character release in a 30-character namespace, as the chart names it.
    long = f"{'r' * 40}-webhook.{'n' * 30}.svc.cluster.local"

    certs = renew(None, [long], NOW)

    san = serving(certs).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [long]
    assert good_for(certs, [long], NOW)


def test_names_are_required() -> None:
    with pytest.raises(ValueError, match="name"):
        renew(None, [], NOW)


def test_the_secret_round_trip_keeps_everything() -> None:
    certs = renew(None, NAMES, NOW)

    data = certs.secret_data()

    assert set(data) == {"tls.crt", "tls.key", "ca.crt", "ca.key"}
    assert Certificates.from_secret_data(data) == certs


@pytest.mark.parametrize("missing", ["tls.crt", "tls.key", "ca.crt"])
def test_a_secret_missing_a_part_holds_no_certificates(missing: str) -> None:
    data = renew(None, NAMES, NOW).secret_data()
    del data[missing]

    assert Certificates.from_secret_data(data) is None
    assert Certificates.from_secret_data(None) is None
    assert Certificates.from_secret_data({"tls.crt": "!!", "tls.key": "", "ca.crt": ""}) is None


def test_good_for_wants_every_name_and_thirty_days() -> None:
    certs = renew(None, NAMES, NOW)

    assert good_for(certs, NAMES[:1], NOW)
    assert not good_for(certs, [*NAMES, "other.svc"], NOW)
    assert good_for(certs, NAMES, NOW + SERVING_LIFETIME - RENEW_BEFORE - timedelta(hours=1))
    assert not good_for(certs, NAMES, NOW + SERVING_LIFETIME - RENEW_BEFORE + timedelta(hours=1))
    assert not good_for(certs, NAMES, NOW - timedelta(hours=1))  # not yet valid


def test_good_for_refuses_mismatched_parts() -> None:
    one, other = renew(None, NAMES, NOW), renew(None, NAMES, NOW)

    assert not good_for(Certificates(one.cert, other.key, one.ca), NAMES, NOW)
    assert not good_for(Certificates(one.cert, one.key, other.ca), NAMES, NOW)
    assert not good_for(Certificates(b"junk", one.key, one.ca), NAMES, NOW)
    assert not good_for(Certificates(one.cert, b"junk", one.ca), NAMES, NOW)


def test_renewing_the_serving_certificate_keeps_the_ca() -> None:
    first = renew(None, NAMES, NOW)

    later = NOW + SERVING_LIFETIME - RENEW_BEFORE + timedelta(days=1)
    second = renew(first, [*NAMES, "other.svc"], later)

    assert second.ca == first.ca  # the caBundle does not change
    assert second.ca_key == first.ca_key
    assert second.cert != first.cert
    assert good_for(second, [*NAMES, "other.svc"], later)


def test_a_ca_near_its_end_is_replaced_and_kept_in_the_bundle_while_valid() -> None:
    first = renew(None, NAMES, NOW)
    later = NOW + CA_LIFETIME - SERVING_LIFETIME

    second = renew(first, NAMES, later)

    new_ca, old_ca = cas(second)
    assert old_ca == cas(first)[0]
    serving(second).verify_directly_issued_by(new_ca)
    assert good_for(second, NAMES, later)
    # Once the old CA has expired it is dropped.
    third = renew(first, NAMES, NOW + CA_LIFETIME + timedelta(days=1))
    assert len(cas(third)) == 1


def test_certificates_without_the_ca_key_get_a_new_ca() -> None:
    first = renew(None, NAMES, NOW)
    without_key = Certificates(first.cert, first.key, first.ca)

    second = renew(without_key, NAMES, NOW)

    assert cas(second)[0] != cas(first)[0]
    assert cas(second)[1] == cas(first)[0]


def test_a_tls_client_trusting_the_bundle_accepts_the_server(tmp_path: Path) -> None:
    certs = renew(None, ["localhost", "127.0.0.1"], NOW)
    (tmp_path / "tls.crt").write_bytes(certs.cert)
    (tmp_path / "tls.key").write_bytes(certs.key)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    client = ssl.create_default_context(cadata=certs.ca.decode())

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def accept() -> None:
            connection, _ = listener.accept()
            with server.wrap_socket(connection, server_side=True) as tls:
                tls.sendall(b"ok")

        thread = threading.Thread(target=accept)
        thread.start()
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            client.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.recv(2) == b"ok"
        thread.join()
