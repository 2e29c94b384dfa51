"""Joining (or starting) the Ray cluster a job runs on, with one-line errors.

Ray's own client, given an address nobody answers at, retries for minutes and prints C++ log
lines as it goes; given no Ray at all, an `ImportError`. Both become a `RayUnavailable` here,
raised before any job is created or resumed: a TCP connection to the address is tried first
(a few seconds at most), and only an address that answers is handed to `ray.init`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from types import ModuleType
from urllib.parse import urlsplit

from .options import LOCAL

INSTALL = "pip install 'charter[ray]'"
CONNECT_TIMEOUT_S = 5.0
NAMESPACE = "charter"
"""Ray namespace of charter's actors, so a test or an operator can find them by name."""


class RayUnavailable(RuntimeError):
    """Ray cannot be used as asked (not installed, or no cluster at the address); one line."""


def require_ray() -> ModuleType:
    """The `ray` module, or `RayUnavailable` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable(
            f"--ray needs Ray, which is an optional extra of charter: {INSTALL}"
        ) from None
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    """The host and port an address names (`HOST:PORT`, `ray://HOST:PORT`); None if none."""
    parts = urlsplit(address if "://" in address else f"gcs://{address}")
    try:
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or port is None:
        return None
    return parts.hostname, port


def _resolve_auto() -> str:
    """What `auto` means here: $RAY_ADDRESS, else the cluster `ray start` recorded on this
    machine; `RayUnavailable` when neither names one."""
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    try:  # where `ray start` records its cluster (Ray's own lookup, private)
        from ray._private.services import find_gcs_addresses

        found = sorted(find_gcs_addresses())  # type: ignore[no-untyped-call]
    except Exception:  # a Ray whose private layout moved: let ray.init look
        return "auto"
    if not found:
        raise RayUnavailable(
            "--ray auto: no Ray cluster runs on this machine and $RAY_ADDRESS is unset "
            "(start one with `ray start --head`, give its address, or use --ray alone for a "
            "local Ray started for the run)"
        )
    return str(found[0])


def check_reachable(address: str) -> None:
    """`RayUnavailable` unless something accepts a TCP connection at `address`."""
    target = _host_port(address)
    if target is None:
        raise RayUnavailable(
            f"--ray {address}: not a cluster address (give HOST:PORT, ray://HOST:PORT, "
            "auto, or nothing for a local Ray)"
        )
    try:
        with socket.create_connection(target, timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if isinstance(exc, TimeoutError | socket.timeout):
            reason = f"no answer within {CONNECT_TIMEOUT_S:g} s"
        raise RayUnavailable(
            f"--ray {address}: cannot reach a Ray cluster there ({reason.lower()})"
        ) from None


@contextlib.contextmanager
def connected(address: str, *, local_cpus: int) -> Iterator[ModuleType]:
    """Ray, joined to the cluster at `address` (`LOCAL`: a Ray started on this machine with
    `local_cpus` CPUs, on loopback, ended with the run) until the block ends."""
    ray = require_ray()
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False, "namespace": NAMESPACE}
    if address == LOCAL:
        ray.init(
            address="local",  # never someone else's cluster found through $RAY_ADDRESS
            num_cpus=local_cpus,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            **quiet,
        )
    else:
        target = _resolve_auto() if address == "auto" else address
        if target != "auto":
            check_reachable(target)
        try:
            ray.init(address=target, **quiet)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RayUnavailable(f"--ray {address}: {first}") from None
    try:
        yield ray
    finally:
        ray.shutdown()
