"""Process groups and collectives on ``mx.distributed``, with a watchdog for dead peers.

MLX does the communication (its ring backend over TCP, MPI, NCCL, JACCL): this module
names the group in torch's words and guards it. Start the processes with MLX's
launcher, ``mlx.launch -n 2 python train.py`` on one machine, or ``mlx.launch
--hostfile hosts.json python train.py`` across machines; each then calls :func:`init`.
A process started alone is a world of size 1: every collective returns its input
and nothing communicates.

Collectives are lazy like every other lucid op: :func:`all_reduce` and
:func:`all_gather` add nodes to the graph, and the communication runs when the result is
evaluated (for gradients reduced by :class:`lucid.nn.parallel.DistributedDataParallel`,
inside the optimizer step's one ``mx.eval``).

Faults. MLX's ring waits forever for a peer that has died. So :func:`init` also opens a
side channel (TCP, rank 0 as the hub, every other rank connected to it) on which every
rank sends a heartbeat with the number of collectives it has entered, every 0.25 s.
A thread in each process watches it:

- a peer whose connection closes has *died* (or *left*, if it said goodbye at exit);
  the next collective this process starts raises ``RuntimeError`` naming that rank,
  before anything is sent;
- when this process has entered more collectives than a peer that has died, it is
  waiting in an evaluation that can never finish (MLX's eval cannot be interrupted or
  moved to another thread: its streams belong to the thread that made them). The
  watchdog then writes ``lucid.distributed: rank R ...`` to stderr and ends the process
  with ``os._exit(1)``: no ``finally`` blocks or ``atexit`` handlers run;
- the same when a live peer has not entered a collective that this process is waiting
  in for ``timeout`` seconds (its count has not moved), or its heartbeat has been
  silent that long.

``timeout`` is :func:`init`'s argument, else the environment variable
``LUCID_DIST_TIMEOUT`` (seconds), else 300 s. Differs from torch: there is no
``init_method``/``store`` (the launcher's hostfile plays that part), collectives return
their result lazily instead of a work handle, and ``all_gather`` concatenates along the
first axis as MLX does, instead of filling a list.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import socket
import sys
import threading
import time
from typing import Any

import mlx.core as mx

from .tensor import Tensor

__all__ = [
    "init",
    "is_initialized",
    "get_rank",
    "get_world_size",
    "barrier",
    "all_reduce",
    "all_gather",
    "broadcast",
    "DEFAULT_TIMEOUT",
]

#: seconds a rank waits for a peer in a collective before the watchdog ends it
DEFAULT_TIMEOUT = 300.0
_BACKENDS = ("any", "ring", "mpi", "nccl", "jaccl")
_OPS = ("sum", "mean", "max", "min")
_BEAT = 0.25  # seconds between heartbeats
_SEND_TIMEOUT = 5.0  # seconds a side-channel send may block

_group: mx.distributed.Group | None = None
_watchdog: _Watchdog | None = None


# ----------------------------------------------------------------------------- the group


def init(backend: str = "any", timeout: float | None = None) -> None:
    """Join the group of processes that the launcher started (idempotent).

    Args:
        backend: MLX's backend name: ``"any"`` (the first that works), ``"ring"``,
            ``"mpi"``, ``"nccl"`` or ``"jaccl"``.
        timeout: seconds a collective may wait for a peer before the watchdog ends this
            process (see the module docstring); default ``LUCID_DIST_TIMEOUT`` or 300.

    With more than one process this runs one small collective (the side channel's port)
    and waits until every rank has connected to the side channel, at most ``timeout``.
    """
    global _group, _watchdog
    if backend not in _BACKENDS:
        raise ValueError(f"init: backend must be one of {_BACKENDS}; got {backend!r}")
    timeout = _timeout(timeout)
    if _group is not None:
        if _watchdog is not None:
            _watchdog.timeout = timeout
        return
    group = mx.distributed.init(strict=False, backend=backend)
    if group.size() > 1:
        _watchdog = _Watchdog(group, timeout)
    _group = group


def _timeout(value: float | None) -> float:
    source = "timeout"
    if value is None:
        value, source = os.environ.get("LUCID_DIST_TIMEOUT", DEFAULT_TIMEOUT), "LUCID_DIST_TIMEOUT"
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = float("nan")
    if isinstance(value, bool) or not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"init: {source} must be a positive number of seconds; got {value!r}")
    return seconds


def is_initialized() -> bool:
    """Whether :func:`init` has run in this process."""
    return _group is not None


def _world() -> mx.distributed.Group:
    """The group, joined with the defaults on first use."""
    if _group is None:
        init()
    assert _group is not None
    return _group


def get_rank() -> int:
    """This process's rank, from 0 (0 in a single process)."""
    return _world().rank()


def get_world_size() -> int:
    """The number of processes in the group (1 in a single process)."""
    return _world().size()


def _enter(what: str) -> mx.distributed.Group:
    """Start a collective: raise if a peer is known to be gone; count it for the watchdog."""
    group = _world()
    if _watchdog is not None:
        _watchdog.enter(what)
    return group


# ----------------------------------------------------------------------------- collectives


def _array(who: str, tensor: Any) -> mx.array:
    if isinstance(tensor, Tensor):
        return tensor.data
    if isinstance(tensor, mx.array):
        return tensor
    raise TypeError(
        f"{who}: tensor must be a lucid Tensor or an mx.array; got {type(tensor).__name__}"
    )


def _like(tensor: Any, value: mx.array) -> Any:
    return Tensor(value) if isinstance(tensor, Tensor) else value


def all_reduce(tensor: Any, op: str = "sum") -> Any:
    r"""Combine ``tensor`` elementwise over all ranks: ``"sum"`` (:math:`\sum_r x_r`),
    ``"mean"`` (:math:`\frac{1}{N}\sum_r x_r`), ``"max"`` or ``"min"``.

    Returns a new, lazy Tensor (or ``mx.array`` for an ``mx.array``), the same on every
    rank; ``tensor`` is left as it is (torch writes into it). Outside autograd: the
    result has no gradient."""
    if op not in _OPS:
        raise ValueError(f"all_reduce: op must be one of {_OPS}; got {op!r}")
    x = _array("all_reduce", tensor)
    group = _enter(f"all_reduce(op={op!r})")
    if group.size() == 1:
        return _like(tensor, mx.array(x))
    if op in ("sum", "mean"):
        out = mx.distributed.all_sum(x, group=group)
        if op == "mean":
            out = out / group.size()
    elif op == "max":
        out = mx.distributed.all_max(x, group=group)
    else:
        out = mx.distributed.all_min(x, group=group)
    return _like(tensor, out)


def all_gather(tensor: Any) -> Any:
    """Every rank's ``tensor``, concatenated along the first axis in rank order (shape
    ``(N * n, ...)`` for inputs of shape ``(n, ...)``; a 0-d input gives shape ``(N,)``).
    Every rank must pass the same shape and dtype. Lazy, like :func:`all_reduce`."""
    x = _array("all_gather", tensor)
    group = _enter("all_gather")
    if x.ndim == 0:
        x = x.reshape(1)
    if group.size() == 1:
        return _like(tensor, mx.array(x))
    return _like(tensor, mx.distributed.all_gather(x, group=group))


def broadcast(tensor: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``tensor`` on every rank (a new, lazy value; an all-sum in which
    the other ranks contribute zeros, so it moves as much as :func:`all_reduce`)."""
    x = _array("broadcast", tensor)
    group = _enter("broadcast")
    n = group.size()
    if isinstance(src, bool) or not isinstance(src, int) or not 0 <= src < n:
        raise ValueError(f"broadcast: src must be a rank in [0, {n}); got {src!r}")
    if n == 1:
        return _like(tensor, mx.array(x))
    mine = x if group.rank() == src else mx.zeros_like(x)
    return _like(tensor, mx.distributed.all_sum(mine, group=group))


def barrier() -> None:
    """Wait until every rank has reached this call (one tiny all-sum, evaluated here)."""
    group = _enter("barrier")
    if group.size() > 1:
        mx.eval(mx.distributed.all_sum(mx.zeros((1,)), group=group))


# ----------------------------------------------------------------------------- the watchdog


class _Watchdog:
    """The side channel and the thread that watches it (see the module docstring).

    Rank 0 listens on an ephemeral port of its own address (the first address of rank 0
    in ``MLX_HOSTFILE``, else ``LUCID_DIST_MASTER_ADDR``, else 127.0.0.1); the port
    reaches the others in one all-sum. Each line on a connection is a JSON object:
    a rank's ``{"count": n}`` to the hub, the hub's ``{"counts": [...], "gone": {...}}``
    to each rank, and ``{"bye": true}`` when a process exits normally.
    """

    def __init__(self, group: mx.distributed.Group, timeout: float) -> None:
        self.rank, self.size, self.timeout = group.rank(), group.size(), timeout
        self.count = 0  # collectives this rank has entered
        self.counts = [0] * self.size
        self.gone: dict[int, str] = {}  # rank -> "died" / "left" / "went silent"
        self.seen = [time.monotonic()] * self.size
        self.behind_since: dict[int, tuple[int, float]] = {}  # rank -> (its count, since)
        self.lock = threading.Lock()
        self.buffers: dict[int, bytes] = {}
        self.socks: dict[int, socket.socket] = {}  # rank -> connection (the hub's peers)
        self.closing = False
        host = _master_address()
        deadline = time.monotonic() + timeout
        if self.rank == 0:
            server = socket.create_server((host, 0))
            port = server.getsockname()[1]
            mx.eval(mx.distributed.all_sum(mx.array([port], dtype=mx.int32), group=group))
            server.settimeout(max(deadline - time.monotonic(), 0.1))
            while len(self.socks) < self.size - 1:
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    missing = sorted(set(range(1, self.size)) - set(self.socks))
                    raise RuntimeError(
                        f"lucid.distributed.init: rank(s) {missing} did not connect to the "
                        f"watchdog's side channel within {timeout:g} s"
                    ) from None
                conn.settimeout(max(deadline - time.monotonic(), 0.1))
                hello = json.loads(_first_line(conn))
                conn.settimeout(_SEND_TIMEOUT)
                self.socks[int(hello["rank"])] = conn
            server.close()
        else:
            found = mx.distributed.all_sum(mx.array([0], dtype=mx.int32), group=group)
            port = int(found.item())
            conn = _connect(host, port, deadline)
            conn.settimeout(_SEND_TIMEOUT)
            conn.sendall(json.dumps({"rank": self.rank}).encode() + b"\n")
            self.socks[0] = conn
        atexit.register(self.goodbye)
        threading.Thread(target=self.run, name="lucid-watchdog", daemon=True).start()

    # ---- the main thread
    def enter(self, what: str) -> None:
        with self.lock:
            gone = dict(self.gone)
        if gone:
            rank, why = min(gone.items())
            raise RuntimeError(
                f"lucid.distributed: rank {rank} {why}; {what} on rank {self.rank} needs "
                f"every rank of {self.size}, so it cannot run (the group is broken: restart "
                "all processes)"
            )
        with self.lock:
            self.count += 1

    def goodbye(self) -> None:
        """At a normal exit: tell the others (with the final count) and stop watching."""
        with self.lock:
            self.closing = True
            line = json.dumps({"bye": True, "count": self.count}).encode() + b"\n"
        for conn in list(self.socks.values()):
            try:
                conn.sendall(line)
                conn.close()
            except OSError:
                pass

    # ---- the thread
    def run(self) -> None:
        while not self.closing:
            try:
                self._send()
                self._receive()
                self._check()
            except Exception as e:  # the watchdog must not die silently
                if self.closing:  # goodbye() closed the connections under it: exiting
                    return
                self._fatal(f"the watchdog on rank {self.rank} failed: {type(e).__name__}: {e}")

    def _send(self) -> None:
        with self.lock:
            if self.rank == 0:
                self.counts[0] = self.count
                msg = {
                    "counts": list(self.counts),
                    "gone": {str(k): v for k, v in self.gone.items()},
                }
            else:
                msg = {"count": self.count}
        line = json.dumps(msg).encode() + b"\n"
        for rank, conn in list(self.socks.items()):
            try:
                conn.sendall(line)
            except OSError:
                self._lose(rank, "died (its side-channel connection broke)")

    def _receive(self) -> None:
        socks = {conn: rank for rank, conn in self.socks.items()}
        if not socks:
            time.sleep(_BEAT)
            return
        ready, _, _ = select.select(list(socks), [], [], _BEAT)
        for conn in ready:
            rank = socks[conn]
            try:
                data = conn.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._lose(rank, "died (its process ended without leaving the group)")
                continue
            buffer = self.buffers.get(rank, b"") + data
            *lines, self.buffers[rank] = buffer.split(b"\n")
            for line in lines:
                self._message(rank, json.loads(line))

    def _message(self, rank: int, msg: dict[str, Any]) -> None:
        with self.lock:
            self.seen[rank] = time.monotonic()
            if "count" in msg:
                self.counts[rank] = int(msg["count"])
            if msg.get("bye"):
                self.gone.setdefault(rank, "left the group (its process exited)")
                self._drop(rank)
            elif "counts" in msg:  # from the hub: everyone's counts and who is gone
                for r, c in enumerate(msg["counts"]):
                    if r != self.rank:
                        self.counts[r] = int(c)
                        self.seen[r] = self.seen[0]
                for r, why in msg["gone"].items():
                    if int(r) != self.rank:
                        self.gone.setdefault(int(r), why)

    def _lose(self, rank: int, why: str) -> None:
        with self.lock:
            self.gone.setdefault(rank, why)
            self._drop(rank)

    def _drop(self, rank: int) -> None:
        conn = self.socks.pop(rank, None)
        if conn is not None:
            conn.close()

    def _check(self) -> None:
        now = time.monotonic()
        with self.lock:
            if self.closing:
                return
            mine = self.count
            for r in range(self.size):
                if r == self.rank:
                    continue
                behind = self.counts[r] < mine
                if r in self.gone:
                    if behind:
                        self._fatal(
                            f"rank {r} {self.gone[r]} while rank {self.rank} waits for it in "
                            f"collective #{mine} (it entered {self.counts[r]})"
                        )
                    continue
                if r in self.socks and now - self.seen[r] > self.timeout:
                    self.gone[r] = f"went silent (no heartbeat for {self.timeout:g} s)"
                    continue
                if not behind:
                    self.behind_since.pop(r, None)
                    continue
                count, since = self.behind_since.get(r, (None, now))
                if count != self.counts[r]:
                    self.behind_since[r] = (self.counts[r], now)
                elif now - since > self.timeout:
                    self._fatal(
                        f"rank {r} has not entered collective #{mine} within the timeout of "
                        f"{self.timeout:g} s (it is at #{self.counts[r]}); rank {self.rank} "
                        "would wait forever"
                    )

    def _fatal(self, why: str) -> None:
        sys.stderr.write(f"lucid.distributed: {why}. Ending rank {self.rank} (os._exit(1)).\n")
        sys.stderr.flush()
        os._exit(1)


def _master_address() -> str:
    path = os.environ.get("MLX_HOSTFILE")
    if path:
        try:
            with open(path) as f:
                hosts = json.load(f)
            return str(hosts[0][0]).rsplit(":", 1)[0]
        except (OSError, ValueError, IndexError, KeyError, TypeError):
            pass
    return os.environ.get("LUCID_DIST_MASTER_ADDR", "127.0.0.1")


def _first_line(conn: socket.socket) -> bytes:
    """The first line on ``conn``, read byte by byte: a buffered reader could swallow the
    start of the heartbeats that follow it."""
    line = b""
    while not line.endswith(b"\n"):
        byte = conn.recv(1)
        if not byte:
            raise RuntimeError("lucid.distributed.init: a rank closed the side channel")
        line += byte
    return line


def _connect(host: str, port: int, deadline: float) -> socket.socket:
    while True:
        try:
            return socket.create_connection(
                (host, port), timeout=max(deadline - time.monotonic(), 0.1)
            )
        except OSError as e:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"lucid.distributed.init: cannot reach rank 0's side channel at "
                    f"{host}:{port}: {e}"
                ) from None
            time.sleep(0.05)
