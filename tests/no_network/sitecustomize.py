"""Loaded at start-up by every Python process whose path holds this folder (tests/e2e/
test_offline.py puts it on PYTHONPATH): with NO_NETWORK_LOG set, any Internet socket
connection, datagram or name lookup is written to that file and refused, so a library that
swallows the error is still caught by the log."""

import os
import socket

_LOG = os.environ.get("NO_NETWORK_LOG")
_INTERNET = (socket.AF_INET, socket.AF_INET6)

if _LOG:
    def _refuse(what: str, target: object) -> None:
        with open(_LOG, "a", encoding="utf-8") as log:
            log.write(f"{what} {target!r}\n")
        raise OSError(101, f"network blocked by the test: {what} {target!r}")

    _connect, _connect_ex, _sendto = (socket.socket.connect, socket.socket.connect_ex,
                                      socket.socket.sendto)

    def connect(self, address):
        if self.family in _INTERNET:
            _refuse("connect", address)
        return _connect(self, address)

    def connect_ex(self, address):
        if self.family in _INTERNET:
            _refuse("connect_ex", address)
        return _connect_ex(self, address)

    def sendto(self, data, *args):
        if self.family in _INTERNET:
            _refuse("sendto", args[-1])
        return _sendto(self, data, *args)

    def getaddrinfo(host, *args, **kwargs):
        _refuse("getaddrinfo", host)

    socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto = (
        connect, connect_ex, sendto)
    socket.getaddrinfo = getaddrinfo
    socket.gethostbyname = lambda host: _refuse("gethostbyname", host)
