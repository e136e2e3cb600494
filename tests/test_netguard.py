"""The one loopback and Host-header check shared by `taskfit serve` and `taskfit ui`."""

from taskfit.netguard import HostGuard, host_allowed, host_name, is_loopback


def test_loopback_addresses_in_every_spelling():
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST.", "app.localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "192.168.1.5", "example.com", "127.0.0.1.evil.example", "localhost.evil.example", ""):
        assert not is_loopback(host), host


def test_host_header_values():
    assert host_name("[::1]:8000") == "::1" and host_name("Localhost:80") == "localhost" and host_name("::1") == "::1"
    assert host_allowed("127.0.0.1:8000") and host_allowed("[::1]:8765") and not host_allowed("evil.example:8000")
    assert host_allowed("review.lan:8765", ["review.lan"]) and host_allowed("review.lan", ["review.lan:1"])
    assert not host_allowed("") and not host_allowed("evil.example", ["review.lan"])


def test_guard_checks_host_then_origin():
    guard = HostGuard(app=None)  # type: ignore[arg-type]
    assert guard.check({b"host": b"127.0.0.1:8000"}) is None
    assert guard.check({b"host": b"localhost:8000", b"origin": b"http://localhost:8000"}) is None
    assert "evil.example" in guard.check({b"host": b"evil.example:8000"})
    assert "cross-origin" in guard.check({b"host": b"127.0.0.1:8000", b"origin": b"http://evil.example"})
    assert "cross-origin" in guard.check({b"host": b"127.0.0.1:8000", b"origin": b"null"})
