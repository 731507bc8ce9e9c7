"""Ray Train's torch backend kept on loopback for local sweeps (:class:`LoopbackTorchConfig`), and the
workers' entry point (:func:`train_loop_entry`).

A module of its own that imports only Ray and torch: Ray Train's controller unpickles the backend config,
and a ``ray_train`` trial builds its ``TorchTrainer`` from these two, so whatever this module imports,
the trial and controller processes of every ``ray_train`` trial import too (the training stack,
transformers and the metrics, is the workers' alone).
"""

from __future__ import annotations

import ipaddress
import os
import socket

import ray
from ray.train.torch.config import TorchConfig

from raydetox.compat import (
    c10d_store_creator,
    ray_torch_backend,
    set_c10d_store_creator,
    torchelastic_uses_agent_store,
)


def train_loop_entry(config: dict) -> None:
    """Ray Train's per-worker function of a ``ray_train`` trial: imports the training stack in the worker
    (never in the trial or controller that pickle this reference) under raydetox's collector settings
    (:mod:`raydetox.gc_policy`), then runs :func:`raydetox.train_ray.train_loop_per_worker`."""
    from raydetox import gc_policy

    with gc_policy.importing_training_stack():
        from raydetox.train_ray import train_loop_per_worker
    train_loop_per_worker(config)


class LoopbackTorchConfig(TorchConfig):
    """Ray Train's ``TorchConfig``, but on a loopback node no process-group socket leaves loopback.

    torch's rendezvous store (``env://``, hosted by rank 0) listens on every interface whatever
    ``MASTER_ADDR`` says, and gloo binds to the address the hostname resolves to; on a local sweep
    (Ray on 127.0.0.1) both would expose unauthenticated sockets to the network.
    """

    @property
    def backend_cls(self):
        return _LoopbackTorchBackend


class _LoopbackTorchBackend(ray_torch_backend()):
    def on_start(self, worker_group, backend_config) -> None:
        worker_group.execute(_keep_process_group_on_loopback)  # before Ray creates the process group
        super().on_start(worker_group, backend_config)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _keep_process_group_on_loopback() -> None:
    """In a worker on a loopback node: gloo on the loopback interface, rank 0's store bound to MASTER_ADDR."""
    if not _is_loopback(ray.util.get_node_ip_address()):
        return
    import psutil  # a dependency of accelerate
    from torch.distributed import TCPStore

    loopback = [name for name, addrs in psutil.net_if_addrs().items()
                if any(a.family == socket.AF_INET and _is_loopback(a.address) for a in addrs)]
    if loopback:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", loopback[0])
    create = c10d_store_creator()
    if create is None or getattr(create, "loopback", False):
        return

    def create_on_loopback(hostname, port, rank, world_size, timeout, use_libuv=True):
        if rank != 0 or not _is_loopback(hostname) or torchelastic_uses_agent_store():
            return create(hostname, port, rank, world_size, timeout, use_libuv)
        family = socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((hostname, port))
            sock.listen()
        except OSError:
            sock.close()
            raise
        # The store owns the listening socket from here on (it closes it on shutdown).
        return TCPStore(hostname, port, world_size, is_master=True, timeout=timeout, multi_tenant=True,
                        master_listen_fd=sock.detach(), use_libuv=use_libuv)

    create_on_loopback.loopback = True  # type: ignore[attr-defined]
    set_c10d_store_creator(create_on_loopback)
