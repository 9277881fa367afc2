"""The GPUs in this machine, through NVML, and which of them TensorRT-RTX can build for.

Only `current` and weightless cells need a GPU; everything else is built ahead of time on
the CPU. NVML (nvidia-ml-py) answers without a CUDA context, so asking costs milliseconds
and never touches the GPU. A host without a driver or without a GPU is a normal answer here
(an inventory with a `reason`), never an exception: the executor skips GPU cells with it.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from typing import Any

from matrix.errors import GpuError
from matrix.plan.capabilities import CC, KNOWN

_KNOWN_LIST = ", ".join(cc.dotted for cc in KNOWN)
_NEWEST_KNOWN = max(KNOWN)


def _why_refused(this: str) -> str:
    return (
        f"TensorRT-RTX builds and runs on RTX-class GPUs (CC {_KNOWN_LIST}); on {this} a "
        "'current' build yields an engine that runs nowhere and weightless builds fail"
    )


def cc_refusal(subject: str) -> str:
    """The line that refuses a GPU TensorRT-RTX cannot use; `subject` names it (a GPU's label,
    or `CC 9.0` when only the CC is known). One wording for `build`, `refit` and `select`."""
    return f"{subject} is not a TensorRT-RTX target: {_why_refused('this GPU')}"


def is_supported(cc: CC) -> bool:
    """Whether TensorRT-RTX builds for and runs on a GPU of this CC.

    The rules table's CCs, and every CC above the newest of them: TensorRT-RTX 1.7.1 lists
    its targets as "8.0 8.6 8.9 12.0 12.1 >12.0" and sets header bit 6 ("newer GPUs") in a
    default engine, so a future consumer GPU (12.2, 13.0) is a target the library accepts.
    The gaps are not: 9.0 (Hopper), 10.x (datacenter Blackwell), 11.x (Thor), 8.7 (Orin)
    and everything below 7.5 sit between or under the listed CCs and are refused.
    """
    return cc in KNOWN or cc > _NEWEST_KNOWN


@dataclass(frozen=True)
class Gpu:
    index: int
    """NVML index, as `nvidia-smi` numbers the GPUs; `--device N` means this."""
    name: str
    cc: CC
    memory_bytes: int
    uuid: str | None = None
    """`GPU-...`: pins CUDA to this GPU whatever the CUDA device order (see `cuda_env`)."""
    driver: str | None = None
    """The NVIDIA driver's version (`580.95.05`), as NVML reports it; None when it did not."""

    @property
    def label(self) -> str:
        return f"GPU {self.index} ({self.name}, CC {self.cc.dotted})"

    @property
    def supported(self) -> bool:
        return is_supported(self.cc)

    @property
    def refusal(self) -> str | None:
        """Why TensorRT-RTX cannot use this GPU, or None when it can."""
        if self.supported:
            return None
        return cc_refusal(self.label)


@dataclass(frozen=True)
class GpuInventory:
    gpus: tuple[Gpu, ...] = ()
    reason: str | None = None
    """Why there are no GPUs at all (no driver, no device); None when NVML listed some."""

    def usable(self) -> tuple[Gpu, ...]:
        return tuple(gpu for gpu in self.gpus if gpu.supported)

    def unusable_reason(self) -> str:
        """One line saying why no GPU is usable (meaningful when `usable()` is empty)."""
        if not self.gpus:
            return self.reason or "no GPU found"
        refused = [gpu.refusal for gpu in self.gpus if gpu.refusal]
        if len(refused) == 1:
            return refused[0]
        labels = ", ".join(gpu.label for gpu in self.gpus if not gpu.supported)
        return f"{labels} are not TensorRT-RTX targets: {_why_refused('these GPUs')}"

    def pick(self, device: int | None = None) -> Gpu:
        """The GPU to build on: `device` (an NVML index), or the first usable one.

        Raises GpuError (exit 3) saying why when that GPU is missing or unsupported.
        """
        if device is None:
            usable = self.usable()
            if not usable:
                raise GpuError(self.unusable_reason())
            return usable[0]
        gpu = self.at(device)
        if gpu.refusal:
            raise GpuError(gpu.refusal)
        return gpu

    def at(self, index: int, flag: str = "--device") -> Gpu:
        """The GPU NVML numbers `index`, supported or not (the caller refuses it in its own
        words); GpuError naming the GPUs there are when there is none. `flag` is how the
        caller's user spelt the index."""
        gpu = next((g for g in self.gpus if g.index == index), None)
        if gpu is None:
            raise GpuError(self._no_such_device(index, flag))
        return gpu

    def _no_such_device(self, device: int, flag: str = "--device") -> str:
        if not self.gpus:
            return f"{flag} {device}: {self.unusable_reason()}"
        found = ", ".join(gpu.label for gpu in self.gpus)
        return f"{flag} {device}: no such GPU; found {found}"


def gpu_skip_reason(inventory: GpuInventory, device: int | None = None) -> str | None:
    """Why GPU cells cannot be built here, or None when they can (on `inventory.pick(device)`)."""
    try:
        inventory.pick(device)
    except GpuError as error:
        return str(error)
    return None


def cuda_env(gpu: Gpu) -> dict[str, str]:
    """Environment that makes `gpu` CUDA device 0 of a process started with it.

    NVML numbers GPUs in PCI order, CUDA fastest first: the same index can be two different
    GPUs. A UUID in CUDA_VISIBLE_DEVICES names one GPU whatever the order; without one,
    PCI_BUS_ID order makes CUDA's numbering match NVML's.
    """
    if gpu.uuid:
        return {"CUDA_VISIBLE_DEVICES": gpu.uuid}
    return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": str(gpu.index)}


def discover(nvml: Any = None) -> GpuInventory:
    """Ask NVML for the GPUs. `nvml` is a pynvml-like module (tests pass their own).

    Never raises for a missing library, driver or device: that is an inventory with no GPUs
    and a `reason`.
    """
    if nvml is None:
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError as error:  # nvidia-ml-py is a dependency, but be plain about it
            return GpuInventory(reason=f"no NVIDIA driver found (nvidia-ml-py: {error})")
    failures = (nvml.NVMLError, OSError)
    try:
        nvml.nvmlInit()
    except failures as error:
        return GpuInventory(reason=f"no NVIDIA driver found (NVML: {error})")
    try:
        driver = _driver(nvml)
        gpus = tuple(_read_gpu(nvml, i, driver) for i in range(nvml.nvmlDeviceGetCount()))
    except failures as error:
        return GpuInventory(reason=f"NVML could not list the GPUs: {error}")
    finally:
        _shutdown(nvml)
    if not gpus:
        return GpuInventory(reason="no GPU found")
    return GpuInventory(gpus=gpus)


def _read_gpu(nvml: Any, index: int, driver: str | None = None) -> Gpu:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
    return Gpu(
        index=index,
        name=_text(nvml.nvmlDeviceGetName(handle)),
        cc=CC(int(major), int(minor)),
        memory_bytes=int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
        uuid=_uuid(nvml, handle),
        driver=driver,
    )


def _driver(nvml: Any) -> str | None:
    try:
        return _text(nvml.nvmlSystemGetDriverVersion()) or None
    except (nvml.NVMLError, AttributeError):
        return None


def _uuid(nvml: Any, handle: Any) -> str | None:
    try:
        return _text(nvml.nvmlDeviceGetUUID(handle)) or None
    except (nvml.NVMLError, AttributeError):
        return None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _shutdown(nvml: Any) -> None:
    # The answer is already read; a failed shutdown changes nothing for us.
    with contextlib.suppress(nvml.NVMLError, OSError):
        nvml.nvmlShutdown()
