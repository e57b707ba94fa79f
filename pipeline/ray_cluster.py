"""Joining a Ray cluster, or starting a local Ray, for the Ray engine (`pipeline/ray_engine.py`).

Kept apart from the engine, which imports the tagger (torch: a minute on a busy machine), so a command
refuses an unreachable `--ray-address` in one line before it loads anything. Ray is an optional extra
(`pip install 'shoptag[ray]'`); this is the one module that imports it.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

from shoptag.core.errors import ShoptagError

try:
    import ray
except ImportError:  # the optional extra is not installed: `connect` says how to install it
    ray = None

SHARD_SIZE = 1000
CONNECT_TIMEOUT_S = 5.0


class ClusterUnavailable(ShoptagError):
    """The Ray engine cannot start: Ray is not installed, or the cluster at `--ray-address` cannot be reached."""


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the Ray engine runs: `address` None starts a local Ray on this machine's cores."""

    address: str | None = None
    workers: int | None = None  # actors; default: one per GPU, else one per CPU of the cluster
    shard_size: int = SHARD_SIZE


def check(options: RayOptions) -> None:
    """Fail fast, in one line, when the engine cannot run: Ray missing, or no answer at `options.address`
    (before Ray would retry it for a minute, and before a run loads its models)."""
    if ray is None:
        raise ClusterUnavailable("the ray engine needs Ray: pip install 'shoptag[ray]'")
    if options.address:
        _check_reachable(options.address)


def connect(options: RayOptions) -> None:
    """Join the cluster at `options.address`, or start a local Ray; a Ray already started in this process is
    used as it is."""
    check(options)
    if ray.is_initialized():
        return
    try:
        ray.init(address=options.address, num_cpus=None if options.address else options.workers,
                 include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterUnavailable(f"cannot start Ray at {options.address or 'this machine'}: {exc}") from None


def _check_reachable(address: str) -> None:
    """Refuse an address whose host does not answer, before Ray retries it for a minute."""
    if address == "auto":
        return
    hostport = address.removeprefix("ray://").rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterUnavailable(f"bad --ray-address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ClusterUnavailable(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None
