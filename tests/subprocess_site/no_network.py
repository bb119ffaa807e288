"""No connection leaves the machine from a test: look-ups of other hosts and connections
to other addresses fail at once with MESSAGE, so no test depends on whether the network
is up. Loopback stays open (file locks, local servers)."""
import errno
import ipaddress
import socket

MESSAGE = "network access is disabled in the tests"
_real_getaddrinfo = socket.getaddrinfo
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_local(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _getaddrinfo(host, *args, **kwargs):
    if not _is_local(host):
        raise socket.gaierror(socket.EAI_NONAME, f"{MESSAGE} (looked up {host})")
    return _real_getaddrinfo(host, *args, **kwargs)


def _refuse_remote(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
        raise OSError(errno.ENETUNREACH, f"{MESSAGE} (connect to {address[0]})")


def _connect(self, address):
    _refuse_remote(self, address)
    return _real_connect(self, address)


def _connect_ex(self, address):
    _refuse_remote(self, address)
    return _real_connect_ex(self, address)


def install(patch=setattr) -> None:
    """Put the guards in place; `patch` may be pytest's monkeypatch.setattr, which undoes them."""
    patch(socket, "getaddrinfo", _getaddrinfo)
    patch(socket.socket, "connect", _connect)
    patch(socket.socket, "connect_ex", _connect_ex)
