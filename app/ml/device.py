"""Choosing where tensors live."""

from __future__ import annotations

import torch

from app.ml.errors import DeviceUnavailableError


def available_devices() -> list[str]:
    """Every name ``resolve_device`` accepts on this machine."""
    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        names += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    return names


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; ``cpu``, ``cuda`` and ``cuda:N`` are taken literally."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise DeviceUnavailableError(
            f"unknown device {name!r}: use auto, cpu, cuda or cuda:N"
        ) from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                f"device {name!r} asked for, but this machine has no CUDA GPU "
                "(or torch is a CPU build); use 'cpu' or 'auto'"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceUnavailableError(
                f"device {name!r} asked for, but only {torch.cuda.device_count()} GPU(s) exist"
            )
    elif device.type != "cpu":
        raise DeviceUnavailableError(f"unsupported device {name!r}: use auto, cpu or cuda[:N]")
    return device


def limit_threads(cpus: int) -> None:
    """At most ``cpus`` torch threads (never more than torch chose itself).

    torch sizes its pool by the machine's cores: in a container, the host's, however few
    CPUs its quota grants; the threads beyond those only make the process wait its turn.
    """
    torch.set_num_threads(min(torch.get_num_threads(), cpus))
