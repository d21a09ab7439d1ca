"""The suite-wide offline guard (tests/conftest.py) is active: a real exchange is unreachable."""

import socket

import pytest


def test_connecting_to_an_exchange_is_refused():
    with pytest.raises(RuntimeError, match="tests run offline"):
        socket.create_connection(("fapi.binance.com", 443), timeout=1)


def test_loopback_stays_allowed():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    try:
        socket.create_connection(srv.getsockname(), timeout=1).close()
    finally:
        srv.close()
