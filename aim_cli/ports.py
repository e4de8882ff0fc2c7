"""Whether a server can listen where it is told to, asked before it starts rather than after it says "ready"."""

from __future__ import annotations

import errno
import socket

from aim_cli.errors import AimError


def check_port_free(host: str, port: int, option: str = "--port") -> None:
    """Bind host:port once and let go; a port in use (or an address this machine lacks) is one line, exit 2.

    SO_REUSEADDR as servers set it (uvicorn, Ray's proxy): a port left in TIME_WAIT is free to
    them too, while a port another server listens on still refuses the bind.
    """
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        raise AimError(f"--host {host[:100]}: cannot listen there ({exc})", "give an address of this machine") from None
    family, kind, proto, _, where = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(where)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise AimError(
                    f"port {port} on {host or 'all addresses'} is in use by another server",
                    f"stop that server, or choose another {option}",
                ) from None
            raise AimError(
                f"cannot listen on {host or 'all addresses'}:{port} ({exc.strerror or exc})",
                "give an address of this machine and a port you may use",
            ) from None


__all__ = ["check_port_free"]
