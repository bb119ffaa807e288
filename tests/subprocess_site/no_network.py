"""No download can leave the machine from a test: names other than this machine's cannot be
looked up, and TCP connections to global (internet) addresses fail, both at once with
MESSAGE. So no test depends on whether the network is up. Local traffic stays open: loopback
and this machine's own addresses (file locks, Ray's services)."""
import errno
import ipaddress
import socket

MESSAGE = "network access is disabled in the tests"
_real_getaddrinfo = socket.getaddrinfo
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _ip(host):
    try:
        return ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return None


def _may_look_up(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    return host in (None, "", "localhost", socket.gethostname()) or _ip(host) is not None


def _getaddrinfo(host, *args, **kwargs):
    if not _may_look_up(host):
        raise socket.gaierror(socket.EAI_NONAME, f"{MESSAGE} (looked up {host})")
    return _real_getaddrinfo(host, *args, **kwargs)


def _refuse_remote(sock, address):
    # A UDP connect sends nothing (Ray uses one to learn its own address); TCP to the internet is refused.
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
        ip = _ip(str(address[0]))
        if ip is None or ip.is_global:
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
