"""Suite-wide settings.

Offline: every test except those marked ``online`` runs with sockets limited to loopback and
local addresses, so a test that would reach an exchange fails loudly instead of passing by luck
(ccxt code is tested through fake HTTP sessions, see tests/data).

Hypothesis: under CI (``CI`` set) examples are derandomized, so a CI run is reproducible and a
new random edge case cannot turn a build red without a code change; local runs explore fresh
random examples, and any seed they find failing is added to the tests' kept-seed lists.
"""

import os
import socket

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

_LOCAL = ("localhost", "::1", "", None)
_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


def _is_local(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    return host in _LOCAL or (isinstance(host, str) and host.startswith("127."))


def _refuse(what) -> None:
    raise RuntimeError(f"a test tried to reach the network ({what!r}); tests run offline: use the fake "
                       "transports of tests/data, or mark the test 'online'")


def _guarded_connect(sock, address):
    if sock.family != socket.AF_UNIX and not _is_local(address[0]):
        _refuse(address)
    return _connect(sock, address)


def _guarded_connect_ex(sock, address):
    if sock.family != socket.AF_UNIX and not _is_local(address[0]):
        _refuse(address)
    return _connect_ex(sock, address)


def _guarded_getaddrinfo(host, *args, **kwargs):
    if not _is_local(host):
        _refuse(host)
    return _getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True)
def _offline(request, monkeypatch):
    if request.node.get_closest_marker("online"):
        return
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", _guarded_getaddrinfo)
