"""GPU discovery and the TensorRT-RTX support check, driven by NVML answers the tests control."""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import SimpleNamespace

import pynvml
import pytest

from matrix.errors import GpuError
from matrix.gpu import (
    Gpu,
    GpuInventory,
    cc_refusal,
    cuda_env,
    discover,
    gpu_skip_reason,
    is_supported,
)
from matrix.plan.capabilities import CC, SM89, SM120

H100 = ("NVIDIA H100 80GB HBM3", (9, 0))
B200 = ("NVIDIA B200", (10, 0))
RTX4090 = ("NVIDIA GeForce RTX 4090", (8, 9))
RTX5090 = ("NVIDIA GeForce RTX 5090", (12, 0))
RTX3090 = ("NVIDIA GeForce RTX 3090", (8, 6))

H100_REFUSAL = (
    "GPU 0 (NVIDIA H100 80GB HBM3, CC 9.0) is not a TensorRT-RTX target: TensorRT-RTX builds "
    "and runs on RTX-class GPUs (CC 7.5, 8.0, 8.6, 8.9, 12.0, 12.1); on this GPU a 'current' "
    "build yields an engine that runs nowhere and weightless builds fail"
)


@dataclass
class FakeNvml:
    """Answers like pynvml for the devices given; records init/shutdown."""

    devices: tuple[tuple[str, tuple[int, int]], ...] = ()
    init_error: Exception | None = None
    count_error: Exception | None = None
    driver: str = "580.95.05"
    initialised: bool = False
    shut_down: bool = False

    NVMLError = pynvml.NVMLError

    def nvmlInit(self) -> None:
        if self.init_error:
            raise self.init_error
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.shut_down = True

    def nvmlDeviceGetCount(self) -> int:
        if self.count_error:
            raise self.count_error
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return self.devices[handle][0].encode()  # older pynvml returns bytes

    def nvmlDeviceGetCudaComputeCapability(self, handle: int) -> tuple[int, int]:
        return self.devices[handle][1]

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(total=24 << 30, free=20 << 30, used=4 << 30)

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return f"GPU-0000000{handle}-fake"

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver


def inventory_of(*devices: tuple[str, tuple[int, int]]) -> GpuInventory:
    return discover(FakeNvml(devices=devices))


def test_this_host_has_no_gpu_and_says_why() -> None:
    inventory = discover()
    if inventory.gpus:
        pytest.skip("this host has GPUs")
    reason = inventory.reason
    assert reason is not None
    assert reason == "no GPU found" or reason.startswith("no NVIDIA driver found (NVML: ")
    assert inventory.usable() == ()
    assert gpu_skip_reason(inventory) == reason
    with pytest.raises(GpuError, match=f"^{re.escape(reason)}$"):
        inventory.pick()


def test_missing_nvml_library_is_a_reason_not_an_exception() -> None:
    nvml = FakeNvml(init_error=pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
    inventory = discover(nvml)
    assert inventory == GpuInventory(
        reason="no NVIDIA driver found (NVML: NVML Shared Library Not Found)"
    )
    assert not nvml.shut_down  # never initialised, so nothing to shut down


def test_driver_not_loaded() -> None:
    nvml = FakeNvml(init_error=pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
    assert discover(nvml).reason == "no NVIDIA driver found (NVML: Driver Not Loaded)"


def test_zero_devices() -> None:
    nvml = FakeNvml()
    inventory = discover(nvml)
    assert inventory == GpuInventory(reason="no GPU found")
    assert nvml.initialised and nvml.shut_down
    assert gpu_skip_reason(inventory) == "no GPU found"


def test_nvml_failing_while_listing_still_shuts_down() -> None:
    nvml = FakeNvml(devices=(RTX4090,), count_error=pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN))
    assert discover(nvml).reason == "NVML could not list the GPUs: Unknown Error"
    assert nvml.shut_down


def test_rtx4090_resolves_current_to_sm89() -> None:
    inventory = inventory_of(RTX4090)
    assert inventory.gpus == (
        Gpu(0, "NVIDIA GeForce RTX 4090", SM89, 24 << 30, "GPU-00000000-fake", "580.95.05"),
    )
    assert inventory.reason is None
    assert inventory.pick().cc == SM89
    assert inventory.pick().cc.name == "sm89"
    assert gpu_skip_reason(inventory) is None


def test_rtx5090_resolves_current_to_sm120() -> None:
    assert inventory_of(RTX5090).pick(0).cc == SM120


def test_h100_is_refused_with_the_reason() -> None:
    inventory = inventory_of(H100)
    assert inventory.usable() == ()
    assert inventory.gpus[0].refusal == H100_REFUSAL
    with pytest.raises(GpuError) as raised:
        inventory.pick()
    assert str(raised.value) == H100_REFUSAL
    assert raised.value.exit_code == 3
    assert gpu_skip_reason(inventory) == H100_REFUSAL
    assert gpu_skip_reason(inventory, device=0) == H100_REFUSAL


def test_several_unsupported_gpus_in_one_line() -> None:
    inventory = inventory_of(H100, B200)
    assert gpu_skip_reason(inventory) == (
        "GPU 0 (NVIDIA H100 80GB HBM3, CC 9.0), GPU 1 (NVIDIA B200, CC 10.0) are not "
        "TensorRT-RTX targets: TensorRT-RTX builds and runs on RTX-class GPUs "
        "(CC 7.5, 8.0, 8.6, 8.9, 12.0, 12.1); on these GPUs a 'current' build yields an engine "
        "that runs nowhere and weightless builds fail"
    )


def test_mixed_host_picks_the_first_supported_gpu_and_honours_device() -> None:
    inventory = inventory_of(H100, RTX4090, RTX3090)
    assert [gpu.index for gpu in inventory.usable()] == [1, 2]
    assert inventory.pick().name == "NVIDIA GeForce RTX 4090"
    assert inventory.pick(2).cc == CC(8, 6)
    with pytest.raises(GpuError, match=r"^GPU 0 \(NVIDIA H100 80GB HBM3, CC 9\.0\) is not a"):
        inventory.pick(0)
    with pytest.raises(GpuError) as raised:
        inventory.pick(5)
    assert str(raised.value) == (
        "--device 5: no such GPU; found GPU 0 (NVIDIA H100 80GB HBM3, CC 9.0), "
        "GPU 1 (NVIDIA GeForce RTX 4090, CC 8.9), GPU 2 (NVIDIA GeForce RTX 3090, CC 8.6)"
    )
    assert gpu_skip_reason(inventory) is None
    assert gpu_skip_reason(inventory, device=0) == inventory.gpus[0].refusal


def test_device_on_a_host_without_gpus() -> None:
    inventory = GpuInventory(reason="no GPU found")
    with pytest.raises(GpuError, match=r"^--device 1: no GPU found$"):
        inventory.pick(1)


@pytest.mark.parametrize(
    ("cc", "supported"),
    [
        ((7, 5), True),  # Turing RTX: a target when asked for
        ((8, 0), True),
        ((8, 6), True),
        ((8, 9), True),
        ((12, 0), True),
        ((12, 1), True),
        ((12, 2), True),  # newer consumer Blackwell: header bit 6, the library's ">12.0"
        ((13, 0), True),
        ((9, 0), False),  # H100
        ((10, 0), False),  # B200
        ((10, 3), False),  # B300
        ((11, 0), False),  # Thor
        ((8, 7), False),  # Jetson Orin
        ((7, 0), False),  # V100
        ((6, 1), False),  # Pascal
    ],
)
def test_support_table(cc: tuple[int, int], supported: bool) -> None:
    assert is_supported(CC(*cc)) is supported


def test_gpu_at_an_unknown_cc_is_refused_by_name() -> None:
    inventory = inventory_of(("NVIDIA Jetson AGX Orin", (8, 7)))
    assert gpu_skip_reason(inventory) == (
        "GPU 0 (NVIDIA Jetson AGX Orin, CC 8.7) is not a TensorRT-RTX target: TensorRT-RTX "
        "builds and runs on RTX-class GPUs (CC 7.5, 8.0, 8.6, 8.9, 12.0, 12.1); on this GPU a "
        "'current' build yields an engine that runs nowhere and weightless builds fail"
    )


def test_newer_gpu_resolves_to_its_own_cc() -> None:
    assert inventory_of(("NVIDIA GeForce RTX 6090", (12, 2))).pick().cc == CC(12, 2)


def test_cuda_env_pins_by_uuid_or_pci_order() -> None:
    gpu = inventory_of(H100, RTX4090).pick()
    assert cuda_env(gpu) == {"CUDA_VISIBLE_DEVICES": "GPU-00000001-fake"}
    assert cuda_env(Gpu(3, "x", SM89, 0)) == {
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "CUDA_VISIBLE_DEVICES": "3",
    }


def test_the_driver_version_is_read_once_for_every_gpu() -> None:
    inventory = discover(FakeNvml(devices=(RTX4090, RTX3090), driver="581.15"))
    assert [gpu.driver for gpu in inventory.gpus] == ["581.15", "581.15"]


def test_a_bare_cc_is_refused_in_the_words_a_gpu_is() -> None:
    assert cc_refusal("CC 9.0") == H100_REFUSAL.replace(
        "GPU 0 (NVIDIA H100 80GB HBM3, CC 9.0)", "CC 9.0"
    )
