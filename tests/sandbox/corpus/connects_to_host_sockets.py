"""Connects to every pathname UNIX socket the host lists in /proc/net/unix (where no network
namespace hides them: D-Bus, /dev/log, munge, docker.sock, and here a world-writable stream and
datagram socket the test opens), by stream connect and by datagram sendto from a socket pair.
Landlock scopes only abstract sockets, so in the process tier only seccomp stands between: no
socket() at all, and socket pairs only of the stream and seqpacket kinds, which cannot address
another socket. Reaches none."""
# verdict: * error "defines no function"
# verdict: expert-mlp-matches-reference error "reached none"
# max-score: 0
import socket

KNOWN = ["/dev/log", "/run/dbus/system_bus_socket", "/var/run/docker.sock", "/run/munge/munge.socket.2"]


def _listed():
    paths = []
    try:
        with open("/proc/net/unix") as fh:
            for line in fh.read().splitlines()[1:]:
                parts = line.split()
                if len(parts) >= 8 and parts[7].startswith("/"):
                    paths.append(parts[7])
    except OSError:
        pass
    return sorted(set(paths + KNOWN))


def _stream(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(1)
        s.connect(path)
    finally:
        s.close()


def _datagram(path):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        a.sendto(b"hello", path)
    finally:
        a.close()
        b.close()


def expert_mlp(x, w1, w2):
    reached, refused = [], set()
    paths = _listed()
    for path in paths:
        for how, attempt in (("stream", _stream), ("datagram", _datagram)):
            try:
                attempt(path)
                reached.append(f"{how}:{path}")
            except OSError as exc:
                refused.add(type(exc).__name__)
    raise RuntimeError(
        f"host sockets: tried {len(paths)}, reached {', '.join(reached) or 'none'} (refusals: {', '.join(sorted(refused))})"
    )
