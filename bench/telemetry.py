"""What every benchmark records about where it ran: device, versions, and on NVIDIA GPUs, NVML telemetry."""
from __future__ import annotations

import torch

from fastgen.environment import device_name, versions


def nvml_snapshot(index: int = 0) -> dict:
    """GPU name, driver, memory used, SM clock, power and temperature; or why they are unavailable."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # no library, no driver, no GPU: record it and carry on
        return {"nvml": f"unavailable ({type(exc).__name__}: {exc})"}
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        name = pynvml.nvmlDeviceGetName(handle)
        driver = pynvml.nvmlSystemGetDriverVersion()
        return {
            "nvml": "ok",
            "gpu_name": name.decode() if isinstance(name, bytes) else name,
            "driver": driver.decode() if isinstance(driver, bytes) else driver,
            "memory_used_mib": pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20,
            "sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
            "power_w": pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
            "temperature_c": pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU),
        }
    except Exception as exc:
        return {"nvml": f"partial ({type(exc).__name__}: {exc})"}
    finally:
        pynvml.nvmlShutdown()


def run_info(device: torch.device) -> dict:
    info = {"device": str(device), "device_name": device_name(device), **versions()}
    if device.type == "cuda":
        info.update(nvml_snapshot(device.index or 0))
    else:
        info["nvml"] = "not applicable (CPU run)"
    return info
