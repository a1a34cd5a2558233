"""Opens every kind of socket but a local pipe: vsock (it reaches the host even from a private
network namespace), IPv4, IPv6, netlink (the kernel's routing tables), packet."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference error "socket attempts"
# max-score: 0
import errno
import socket


def _vsock():
    s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    s.bind((socket.VMADDR_CID_ANY, 5005))
    s.listen()


def _open(family, kind, proto=0):
    return lambda: socket.socket(family, kind, proto).close()


def expert_mlp(x, w1, w2):
    outcomes = []
    for name, attempt in (
        ("vsock", _vsock),
        ("inet", _open(socket.AF_INET, socket.SOCK_DGRAM)),
        ("inet6", _open(socket.AF_INET6, socket.SOCK_STREAM)),
        ("netlink", _open(socket.AF_NETLINK, socket.SOCK_RAW, 0)),
        ("packet", _open(socket.AF_PACKET, socket.SOCK_RAW)),
        ("unix", lambda: [s.close() for s in socket.socketpair()]),
    ):
        try:
            attempt()
            outcomes.append(f"{name}=opened")
        except OSError as exc:
            outcomes.append(f"{name}={errno.errorcode.get(exc.errno, exc.errno)}")
    raise RuntimeError(f"socket attempts: {' '.join(outcomes)}")
