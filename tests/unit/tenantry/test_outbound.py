"""The SSRF guard itself (tenantry.outbound): which addresses are public, and the call's deadline."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time

import pytest

from tenantry import outbound

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "192.0.0.8",
        "198.18.0.1",
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd00:ec2::254",
        "fec0::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::127.0.0.1",
        "::ffff:0:7f00:1",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::a9fe:a9fe",
        "2002:7f00:1::1",
        "2001:db8::1",
        "3fff::1",
        "5f00::1",
        "ff02::1",
    ],
)
def test_non_public_addresses_are_blocked(address):
    assert outbound.is_blocked(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["1.1.1.1", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "2002:0808:0808::1", "64:ff9b::808:808"]
)
def test_public_addresses_pass(address):
    assert not outbound.is_blocked(ipaddress.ip_address(address))


def test_the_allowlist_admits_its_ranges_in_every_form():
    assert not outbound.is_blocked(ipaddress.ip_address("127.0.0.1"), LOOPBACK)
    assert not outbound.is_blocked(ipaddress.ip_address("::ffff:127.0.0.1"), LOOPBACK)
    assert outbound.is_blocked(ipaddress.ip_address("10.0.0.1"), LOOPBACK)


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433/",
        "http://0x7f.1/",
        "http://127.1/",
        "http://0177.0.0.1/",
        "http://[::1]/",
        "http://localhost/",
        "http://169.254.169.254/latest",
    ],
)
def test_encodings_of_loopback_and_metadata_are_refused_without_naming_the_address(url):
    with pytest.raises(outbound.OutboundRefused) as refused:
        outbound.check_url(url)
    assert "127" not in str(refused.value) and "169.254" not in str(refused.value)


@pytest.mark.parametrize(
    "url", ["ftp://example.com/", "http://user:pw@example.com/", "http:///x", "http://[/", "https://example.com:99999/"]
)
def test_malformed_or_credentialed_urls_are_refused(url):
    with pytest.raises(outbound.OutboundRefused):
        outbound.check_url(url)


def test_a_name_that_does_not_resolve_is_accepted_when_saved_and_fails_when_called():
    outbound.check_url("https://no-such-host.invalid/hooks")
    with pytest.raises(outbound.OutboundFailed):
        outbound.request("POST", "https://no-such-host.invalid/hooks", body=b"{}", timeout=5)


def test_the_timeout_bounds_the_whole_call_not_each_read():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def trickle() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):  # a byte every 0.15 s: no single read ever waits a whole second
            try:
                conn.sendall(b"x")
                time.sleep(0.15)
            except OSError:
                break
        conn.close()

    threading.Thread(target=trickle, daemon=True).start()
    started = time.monotonic()
    try:
        with pytest.raises(outbound.OutboundFailed, match="timed out"):
            outbound.request(
                "POST", f"http://127.0.0.1:{server.getsockname()[1]}/", body=b"{}", timeout=1.0, allow=LOOPBACK
            )
    finally:
        server.close()
    assert time.monotonic() - started < 2.0


def test_redirects_are_not_followed():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def redirect() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/\r\nContent-Length: 0\r\n\r\n")
        conn.close()

    threading.Thread(target=redirect, daemon=True).start()
    try:
        answer = outbound.request(
            "POST", f"http://127.0.0.1:{server.getsockname()[1]}/", body=b"{}", timeout=5, allow=LOOPBACK
        )
    finally:
        server.close()
    assert answer.status == 302 and answer.headers["location"] == "http://169.254.169.254/"
