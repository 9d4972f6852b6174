"""Joining a Ray cluster within a deadline, and saying what is at an address that is not one.

``ray.init(address=...)`` retries for ever when something other than a Ray GCS listens at the
address (a silent socket, a web server: it logs "Failed to get cluster ID from GCS server" every
~40 s), and fails after half a minute with a traceback-like message at Ray's client port. So
before Ray is asked, :func:`probe` makes the one call Ray makes first (``GetClusterId`` of the
GCS, over gRPC) with a deadline, and turns each answer into a one-line :class:`ConfigError` that
says what listens there and what to do; :func:`connect` then gives ``ray.init`` only the time
left of the same deadline (``--connect-timeout``).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from typing import Any

from medattn.errors import ArgumentError

_GET_CLUSTER_ID = "/ray.rpc.NodeInfoGcsService/GetClusterId"
_FIX = ("give the address of the cluster's head (`ray status` on it, or the line `ray start "
        "--head` printed: host:6379 by default)")



def first_line(err: BaseException, limit: int = 300) -> str:
    """The first line of ``err``'s message, at most ``limit`` characters (then "...")."""
    line = (str(err).strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _target(address: str) -> str | None:
    """``host:port`` of ``address`` (``auto`` resolved), or None if it is not of that form."""
    target = address.split("://", 1)[-1]
    if target == "auto":
        try:
            # optional dependency (medattn[ray]), imported by the caller already
            from ray._private.services import canonicalize_bootstrap_address_or_die
            target = canonicalize_bootstrap_address_or_die("auto")
        except (ImportError, AttributeError):
            return None  # Ray's internals moved: let ray.init find it
        except Exception as err:  # noqa: BLE001 - Ray raises ConnectionError and others
            raise ArgumentError(f"{{address}}=auto: no running Ray cluster found "
                                f"({first_line(err)}); start one with `ray start --head` or give "
                                "{address}=host:port.", "address") from None
    host, _, port = target.rpartition(":")
    return target if host and port.isdigit() else None


def _speaks_http1(host: str, port: int, timeout: float) -> bool:
    """Whether the server at ``host:port`` answers a plain HTTP/1 request as a web server."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"HEAD / HTTP/1.0\r\n\r\n")
            return s.recv(5) == b"HTTP/"
    except OSError:
        return False


def probe(address: str, timeout: float) -> None:
    """Raise a one-line :class:`ConfigError` unless a Ray GCS (or, for ``ray://``, a Ray client
    server) answers at ``address`` within ``timeout`` seconds; the message says what was found
    there: nothing, a web server, a silent socket, another gRPC server (Ray's client port)."""
    target = _target(address)
    if target is None:
        return  # not host:port: leave it to Ray (within the deadline of connect())
    host, _, port_text = target.rpartition(":")
    host, port = host.strip("[]"), int(port_text)
    deadline = time.monotonic() + timeout
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        if isinstance(err, TimeoutError):
            reason = "timed out: the host did not answer (down, or a firewall drops it?)"
        elif isinstance(err, ConnectionRefusedError):
            reason = "connection refused: nothing listens there"
        else:
            reason = err.strerror or str(err)
        raise ArgumentError(f"{{address}}={address}: cannot reach a Ray cluster at {host}:{port} "
                            f"({reason}; waited up to {timeout:g} s); check the address and that "
                            "the cluster is up (`ray status` on its head node).", "address") from None
    try:
        import grpc  # Ray's dependency: present where Ray is (optional, medattn[ray])
    except ImportError:  # Ray depends on grpcio; without it, let ray.init try
        return
    left = max(0.5, deadline - time.monotonic())
    with grpc.insecure_channel(f"[{host}]:{port}" if ":" in host else f"{host}:{port}") as channel:
        call = channel.unary_unary(_GET_CLUSTER_ID)  # raw bytes: an empty request is valid
        try:
            call(b"", timeout=left)
            code = None
        except grpc.RpcError as err:
            code, details = err.code(), err.details() or ""
    client = address.startswith("ray://")
    if code is None:
        if client:
            raise ArgumentError(f"{{address}}={address}: a Ray GCS answers at {host}:{port}, not a "
                                f"Ray client server; use {{address}}={host}:{port} (without "
                                "ray://).", "address")
        return
    if code == grpc.StatusCode.UNIMPLEMENTED:
        if client:
            return  # the client server speaks gRPC but has no GCS methods
        raise ArgumentError(f"{{address}}={address}: a gRPC server that is not a Ray GCS answers "
                            f"at {host}:{port} (Ray's client server, port 10001 by default, is "
                            f"one); {_FIX}, or ray://{host}:{port} for Ray's client.", "address")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        raise ArgumentError(f"{{address}}={address}: something accepts connections at "
                            f"{host}:{port} but gave no answer as a Ray cluster within {timeout:g} s "
                            f"({{connect_timeout}}): not Ray, or a Ray too busy to answer; "
                            f"{_FIX}.", "address", "connect_timeout")
    found = ("a web (HTTP) server" if _speaks_http1(host, port, min(2.0, left))
             else "something that is not a Ray GCS")
    said = first_line(RuntimeError(details), 160)
    raise ArgumentError(f"{{address}}={address}: {found} listens at {host}:{port} ({said}); "
                        f"{_FIX}.", "address")


def connect(ray: Any, address: str, timeout: float) -> None:
    """``ray.init(address=address)`` within ``timeout`` seconds in all (probe included);
    a :class:`ConfigError` names the address and what was found there."""
    deadline = time.monotonic() + timeout
    probe(address, timeout)
    outcome: dict[str, BaseException | None] = {}

    def init() -> None:
        try:
            ray.init(address=address, log_to_driver=True)
            outcome["error"] = None
        except BaseException as err:  # noqa: BLE001 - reported by the caller's thread
            outcome["error"] = err
    # Ray has no overall deadline of its own: wait for it in a thread, give up at ours.
    thread = threading.Thread(target=init, name="medattn-ray-connect", daemon=True)
    thread.start()
    thread.join(max(1.0, deadline - time.monotonic()))
    if "error" not in outcome:
        raise ArgumentError(f"{{address}}={address}: Ray did not connect within {timeout:g} s "
                            "({connect_timeout}); check that the address is the cluster head's "
                            "and that this machine runs the cluster's Ray version.", "address",
                            "connect_timeout")
    err = outcome["error"]
    if err is not None:
        root = err
        while root.__cause__ is not None:
            root = root.__cause__
        raise ArgumentError(f"{{address}}={address}: cannot connect to the Ray cluster "
                            f"({type(root).__name__}: {first_line(root)}).", "address") from None


def plain_logs() -> None:
    """Ray's prefixes of worker lines, ``(_remote_train pid=...)``, carry colour codes; where
    they go to a file or a pipe, not a terminal, ask Ray for none (read when Ray prints). Its
    log deduplication marks repeats (``[repeated 2x across cluster]``) in colour whatever the
    setting, so it is turned off there too; that one is read when Ray is imported, so call this
    before ``import ray``."""
    if not all(getattr(f, "isatty", lambda: False)() for f in (sys.stdout, sys.stderr)):
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
