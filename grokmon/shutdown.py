"""Deliver what the monitors computed when the process ends: at normal exit and on SIGTERM.

A preempted job (SLURM, Kubernetes, torchrun's agent) gets SIGTERM, which skips ``atexit``: the
probes whose metrics were finished but not yet written would be lost. :func:`register` tracks
open monitors; the first one installs a SIGTERM handler (main thread only) that closes them, then
hands the signal on: to the handler that was there before, or to the default action, which ends
the process as it would have. Ctrl-C (``KeyboardInterrupt``) ends in ``atexit`` (or in the
monitor's ``__exit__``), which closes them the same way.

One deadline, :data:`SHUTDOWN_TIMEOUT` seconds, covers every open monitor's metric jobs and sinks
together (a preemption grace period is often 30 s): the probes that finished are written, the ones
still computing are counted and warned about, a stalled sink is left behind.

Example:
    >>> from grokmon import shutdown
    >>> shutdown.open_monitors()   # doctest: +SKIP
    []
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
import time
import weakref
from typing import Any

__all__ = ["SHUTDOWN_TIMEOUT", "close_open_monitors", "install_sigterm_handler", "open_monitors", "register",
           "run_first_at_exit", "unregister"]

#: Seconds all open monitors together may take (metric jobs and sinks) when the process ends or is told to stop.
SHUTDOWN_TIMEOUT = 10.0

_OPEN: "weakref.WeakSet[Any]" = weakref.WeakSet()
_installed = False


def register(monitor: Any, *, sigterm: bool = True) -> None:
    """Track ``monitor`` (it needs ``close(timeout=...)``) until :func:`unregister`."""
    _OPEN.add(monitor)
    if sigterm:
        install_sigterm_handler()


def unregister(monitor: Any) -> None:
    _OPEN.discard(monitor)


def open_monitors() -> list[Any]:
    return list(_OPEN)


@atexit.register
def close_open_monitors(timeout: float = SHUTDOWN_TIMEOUT) -> None:
    """Close every tracked monitor, delivering its pending results, all within ``timeout`` s; never raises."""
    deadline = time.monotonic() + timeout
    for monitor in list(_OPEN):
        try:
            monitor.close(timeout=max(0.0, deadline - time.monotonic()))
        except Exception:  # noqa: BLE001 - nothing can be reported while the process ends
            pass


def run_first_at_exit() -> None:
    """Make grokmon's exit hook run before every ``atexit`` hook registered so far.

    ``atexit`` runs the last registered hook first. A host's W&B run tears its service down in a hook
    registered at ``wandb.init``, after grokmon was imported: on Ctrl-C, grokmon's hook would then
    deliver its last records to a W&B run already gone ("Connection lost"). The monitor calls this
    whenever a sink is added, so its records reach every sink added so far.
    """
    atexit.unregister(close_open_monitors)
    atexit.register(close_open_monitors)


def install_sigterm_handler() -> bool:
    """Chain a SIGTERM handler that closes the open monitors; False where it cannot (not the main thread)."""
    global _installed
    if _installed:
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        close_open_monitors(timeout=SHUTDOWN_TIMEOUT)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)
    _installed = True
    return True
