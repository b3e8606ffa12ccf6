"""systemd's notify protocol (``Type=notify``, ``WatchdogSec=``), without libsystemd.

The service manager passes ``NOTIFY_SOCKET``: the path of a unix datagram socket, or, when
it starts with ``@``, a name in the abstract namespace (the ``@`` stands for a NUL byte).
Each datagram is newline-separated ``NAME=value`` lines (sd_notify(3)); the supervisor
sends ``READY=1`` once every child runs, ``STOPPING=1`` when its drain begins, ``STATUS=``
lines for ``systemctl status``, and ``WATCHDOG=1`` from its loops while ``WATCHDOG_USEC``
asks for it (sd_watchdog_enabled(3): only if ``WATCHDOG_PID`` is unset or names us).

Without ``NOTIFY_SOCKET`` (a shell, supervisord, a container) every call does nothing.
The variables are taken out of the environment so the children, which inherit it, cannot
speak for the agent. A datagram that cannot be sent is logged once and dropped: the
pipeline must never stop because its service manager went away.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, MutableMapping

log = logging.getLogger(__name__)
PINGS_PER_INTERVAL = 4  # sd_watchdog_enabled(3) asks for at least 2; 4 absorbs a busy host


class Notifier:
    """Sends notify datagrams to one address; a no-op when there is none."""

    def __init__(
        self,
        address: str | None,
        watchdog_interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = address
        self.watchdog_interval = watchdog_interval
        self._clock = clock
        self._last_ping: float | None = None
        self._warned = False
        self._socket: socket.socket | None = None
        if address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] = os.environ) -> Notifier:
        """Read (and remove) ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``."""
        address = environ.pop("NOTIFY_SOCKET", None) or None
        usec = environ.pop("WATCHDOG_USEC", "")
        watchdog_pid = environ.pop("WATCHDOG_PID", "")
        interval = None
        if usec.isdigit() and int(usec) > 0 and watchdog_pid in ("", str(os.getpid())):
            interval = int(usec) / 1e6
        return cls(address, interval)

    def send(self, *lines: str) -> None:
        """Send ``NAME=value`` lines as one datagram."""
        if self._socket is None or self.address is None:
            return
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            self._socket.sendto("\n".join(lines).encode(), target)
        except OSError as exc:
            if not self._warned:
                log.warning("cannot notify the service manager at %s: %s", self.address, exc)
                self._warned = True

    def ready(self, status: str) -> None:
        """The service is up: systemd starts the units ordered after it."""
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def stopping(self, status: str) -> None:
        """The drain began: systemd shows the unit as deactivating."""
        self.send("STOPPING=1", f"STATUS={status}")

    def reloading(self, status: str) -> None:
        """A reload begins (``READY=1`` follows when it ends, applied or refused);
        MONOTONIC_USEC lets a systemd with ``Type=notify-reload`` match it to its signal."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", f"STATUS={status}")

    def status(self, status: str) -> None:
        """A line for ``systemctl status``."""
        self.send(f"STATUS={status}")

    def watchdog(self) -> None:
        """Call from every loop: pings ``WATCHDOG=1`` a few times per watchdog interval."""
        if self.watchdog_interval is None or self._socket is None:
            return
        now = self._clock()
        due = self.watchdog_interval / PINGS_PER_INTERVAL
        if self._last_ping is None or now - self._last_ping >= due:
            self._last_ping = now
            self.send("WATCHDOG=1")

    def close(self) -> None:
        """Close the socket; later calls do nothing."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None
