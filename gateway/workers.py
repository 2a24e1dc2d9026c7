"""``serve --workers N``: N worker processes on listening sockets they share.

The parent loads the configuration, binds every listening socket (gateway
and admin) and builds the server TLS context, and only then forks. It never
creates an event loop, engine, Redis client or HTTP session, so each worker
makes its own after the fork. Because the TLS context exists before the
fork, all workers share its session ticket keys, and a session that one
worker issued resumes on another. ``gateway.tickets`` keeps that true after
a reload, which builds a new context in each worker.

The parent waits for signals with ``sigtimedwait`` and polls the watched
files in between. It forwards SIGHUP, and a settled file change, to every
worker, which then reloads on its own. It restarts a worker that ended
unexpectedly, after a delay that doubles on each quick failure. On SIGTERM
or SIGINT it closes its copies of the listening sockets, sends SIGTERM to
the workers, waits for them and exits 0.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.config.loader import Config
from gateway.demo.run import stop_with_parent
from gateway.errors import DatabaseUnavailable, ListenError, SchemaOutdated
from gateway.inflight import CANCEL_BOUND
from gateway.logs import server_logger
from gateway.metrics import enable_multiprocess, worker_ended
from gateway.reload import ReloadFailed, build_reloaded
from gateway.serve import Listeners, serve
from gateway.ssolog.writer import FLUSH_TIMEOUT
from gateway.tickets import SharedTicketKeys, TicketKeysUnavailable
from gateway.tls import server_context
from gateway.watch import ChangeDetector, Snapshot, snapshot

#: Signals the parent waits for; they stay blocked in the parent.
SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD})

#: Delay before restarting a worker that ended, doubled per quick failure.
FIRST_RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0
#: A worker that ran this long resets the delay to its first value.
STABLE_AFTER = 30.0

#: Seconds past shutdown_timeout before the parent kills a worker that
#: still runs. After shutdown_timeout a worker cancels its last requests
#: (at most CANCEL_BOUND seconds) and writes its SSO log queue (at most
#: FLUSH_TIMEOUT seconds, while the database is slow or down), then closes
#: its pools, for which 5 seconds are left.
KILL_GRACE = CANCEL_BOUND + FLUSH_TIMEOUT + 5.0

#: Exit status of a worker that cannot start for a reason that a restart
#: does not fix, such as an outdated database schema. ``serve`` without
#: workers exits with it too.
FATAL_STATUS = 2


def bind_listeners(config: Config) -> Listeners:
    """Bind the gateway's and the admin listener's sockets, or raise ListenError."""
    listeners = Listeners()
    settings = config.gateway
    try:
        chosen = settings.listen.port
        for host in settings.listen.host:
            sock = _bind(host, chosen, f"https://{_shown(host)}:{chosen}")
            listeners.gateway.append(sock)
            # With port 0, every further address takes the port the first got.
            chosen = sock.getsockname()[1]
        if settings.admin.enabled:
            chosen = settings.admin.port
            for host in settings.admin.host:
                sock = _bind(host, chosen, f"admin address {host}:{chosen}")
                listeners.admin.append(sock)
                chosen = sock.getsockname()[1]
    except ListenError:
        listeners.close()
        raise
    return listeners


def _shown(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _bind(host: str, port: int, name: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=128)
    except OSError as exc:
        raise ListenError(
            f"cannot listen on {name}: {exc.strerror or exc}: stop the program "
            "that uses this port, or choose another port"
        ) from exc
    sock.setblocking(False)
    return sock


@dataclass
class Worker:
    """One worker process as the parent tracks it."""

    index: int
    pid: int
    started: float


@dataclass
class Supervisor:
    """The parent process of ``serve --workers``."""

    config: Config
    count: int
    listeners: Listeners
    context: ssl.SSLContext
    tickets: SharedTicketKeys | None
    detector: ChangeDetector
    workers: dict[int, Worker] = field(default_factory=dict)
    #: Restart delay of each worker index, and when each restart is due.
    delays: dict[int, float] = field(default_factory=dict)
    due: dict[int, float] = field(default_factory=dict)
    fatal: bool = False

    # --- workers ---------------------------------------------------------

    def spawn(self, index: int) -> None:
        pid = os.fork()
        if pid == 0:
            os._exit(self._run_worker(index))
        self.workers[pid] = Worker(index, pid, time.monotonic())
        server_logger.info(
            "worker started",
            extra={"event": "worker_started", "worker": index, "worker_pid": pid},
        )

    def _run_worker(self, index: int) -> int:
        """Run ``serve`` in the child; return its exit status."""
        # SIGHUP's default action ends a process. Until serve() handles it,
        # a reload request finds the parent's current configuration here.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
        stop_with_parent()
        prepare = _ticket_setter(self.tickets)
        try:
            asyncio.run(
                serve(
                    self.config,
                    baseline=self.detector.applied,
                    listeners=self.listeners,
                    context=self.context,
                    prepare_context=prepare,
                    watch=False,
                )
            )
        except SchemaOutdated as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return FATAL_STATUS
        except DatabaseUnavailable as exc:
            # The database may come back, so the worker is started again.
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return 1
        except Exception:
            server_logger.exception(
                "worker failed", extra={"event": "worker_failed", "worker": index}
            )
            return 1
        finally:
            # os._exit() skips the flushing that a normal exit does.
            sys.stdout.flush()
            sys.stderr.flush()
        return 0

    def reap(self, stopping: bool) -> None:
        """Collect every ended worker; schedule restarts unless ``stopping``."""
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            worker_ended(pid)
            if worker is None or stopping:
                continue
            self._ended(worker, status)

    def _ended(self, worker: Worker, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        ran = time.monotonic() - worker.started
        server_logger.error(
            "worker ended unexpectedly",
            extra={
                "event": "worker_ended",
                "worker": worker.index,
                "worker_pid": worker.pid,
                # A negative code is the number of the signal that ended it.
                "exit_code": code,
                "seconds": round(ran, 3),
            },
        )
        if code == FATAL_STATUS:
            self.fatal = True
            return
        delay = self.delays.get(worker.index, FIRST_RESTART_DELAY)
        if ran >= STABLE_AFTER:
            delay = FIRST_RESTART_DELAY
        self.due[worker.index] = time.monotonic() + delay
        self.delays[worker.index] = min(delay * 2, MAX_RESTART_DELAY)

    def restart_due(self) -> None:
        now = time.monotonic()
        for index, when in list(self.due.items()):
            if when <= now:
                del self.due[index]
                self.spawn(index)

    def signal_workers(self, signum: signal.Signals) -> None:
        for pid in self.workers:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                continue

    # --- reloads ---------------------------------------------------------

    def reload(self, trigger: str) -> None:
        """Reload the parent's copy, then have every worker reload its own.

        The parent's copy is what a restarted worker starts with. The
        workers check, log and count their own reloads, so the parent
        logs only that it kept its copy.
        """
        try:
            self.detector.applied = snapshot(self.config.path)
            config, context, _ = build_reloaded(str(self.config.path), self.config)
        except Exception as exc:  # noqa: BLE001 - the parent must outlive a bad file
            errors = len(exc.problems) if isinstance(exc, ReloadFailed) else 1
            server_logger.warning(
                "the parent keeps its configuration for restarted workers",
                extra={
                    "event": "supervisor_reload_failed",
                    "errors": errors,
                    "error": type(exc).__name__,
                },
            )
        else:
            if self.tickets is not None:
                # New keys before the workers reload, so that every worker
                # reads the same ones.
                # SECURITY: tickets from before the reload stop resuming,
                # so resumed sessions start again under the new trust anchors.
                self.tickets.rotate()
                self.tickets.apply(context)
            self.config, self.context = config, context
        server_logger.info(
            "reloading workers",
            extra={
                "event": "workers_reload",
                "trigger": trigger,
                "workers": len(self.workers),
            },
        )
        self.signal_workers(signal.SIGHUP)

    def poll_files(self) -> None:
        try:
            current = snapshot(self.config.path)
        except Exception:  # noqa: BLE001 - the parent must outlive a bad file
            server_logger.exception(
                "checking the configuration files for changes failed",
                extra={"event": "config_watch_failed"},
            )
            return
        if self.detector.settled(current):
            self.reload("file change")

    # --- main loop -------------------------------------------------------

    def _wait_time(self) -> float:
        interval = self.config.gateway.config_watch_interval
        waits = [interval if interval > 0 else 1.0]
        waits.extend(max(when - time.monotonic(), 0.0) for when in self.due.values())
        return min(waits)

    def run(self) -> int:
        """Start the workers and supervise them until SIGTERM or SIGINT."""
        for index in range(self.count):
            self.spawn(index)
        while not self.fatal:
            received = signal.sigtimedwait(SIGNALS, self._wait_time())
            if received is None:
                if self.config.gateway.config_watch_interval > 0:
                    self.poll_files()
                self.restart_due()
                continue
            signum = signal.Signals(received.si_signo)
            if signum == signal.SIGCHLD:
                self.reap(stopping=False)
                self.restart_due()
            elif signum == signal.SIGHUP:
                self.reload("SIGHUP")
            else:
                return self.stop(signum)
        server_logger.error(
            "a worker cannot start, so the gateway stops",
            extra={"event": "workers_fatal"},
        )
        self.stop(signal.SIGTERM)
        return FATAL_STATUS

    def stop(self, signum: signal.Signals) -> int:
        """Stop every worker gracefully; return the parent's exit status."""
        timeout = self.config.gateway.shutdown_timeout
        server_logger.info(
            "stopping workers",
            extra={
                "event": "workers_stopping",
                "signal": signum.name,
                "workers": len(self.workers),
            },
        )
        # The port closes once the workers closed their copies too.
        self.listeners.close()
        self.due.clear()
        self.signal_workers(signal.SIGTERM)

        deadline = time.monotonic() + timeout + KILL_GRACE
        while self.workers and time.monotonic() < deadline:
            signal.sigtimedwait(
                {signal.SIGCHLD}, max(deadline - time.monotonic(), 0.01)
            )
            self.reap(stopping=True)

        killed = list(self.workers)
        self.signal_workers(signal.SIGKILL)
        for pid in killed:
            os.waitpid(pid, 0)
            del self.workers[pid]
            worker_ended(pid)
        server_logger.info(
            "workers stopped",
            extra={"event": "workers_stopped", "killed": len(killed)},
        )
        return 1 if killed else 0


def supervise(config: Config, count: int, baseline: Snapshot) -> int:
    """Run ``count`` workers on ``config``; return the exit status."""
    listeners = bind_listeners(config)
    metrics_folder = enable_multiprocess()
    context = server_context(config)
    tickets = _shared_tickets(config, context)
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    # Blocked, SIGHUP waits for sigtimedwait(); serve's caller ignored it
    # until now, and an ignored signal would not be waited for.
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    supervisor = Supervisor(
        config, count, listeners, context, tickets, ChangeDetector(baseline)
    )
    try:
        return supervisor.run()
    finally:
        shutil.rmtree(metrics_folder, ignore_errors=True)


def _ticket_setter(
    tickets: SharedTicketKeys | None,
) -> Callable[[ssl.SSLContext], None] | None:
    """Return what gives each new TLS context of a worker the shared keys."""
    if tickets is None:
        return None

    def apply(context: ssl.SSLContext) -> None:
        try:
            tickets.apply(context)
        except TicketKeysUnavailable as exc:
            # The reload goes on: this worker's sessions then resume only
            # on this worker.
            server_logger.warning(
                "the shared TLS ticket keys could not be set",
                extra={"event": "ticket_keys_unshared", "error": str(exc)},
            )

    return apply


def _shared_tickets(config: Config, context: ssl.SSLContext) -> SharedTicketKeys | None:
    try:
        tickets = SharedTicketKeys.create(lambda: server_context(config))
        tickets.apply(context)
    except TicketKeysUnavailable as exc:
        server_logger.warning(
            "TLS sessions resume on another worker only until the first "
            "reload, because the ticket keys cannot be shared",
            extra={"event": "ticket_keys_unshared", "error": str(exc)},
        )
        return None
    return tickets
