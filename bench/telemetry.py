"""What every benchmark records about where it ran: device, versions, and on NVIDIA GPUs, NVML telemetry."""

from __future__ import annotations

import json
import os
import re
import time

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


def results_folder() -> str:
    """This machine's folder name under bench/results: the GPU's name, else "cpu-" and the CPU's."""
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu " + device_name(torch.device("cpu"))
    return re.sub(r"[^a-z0-9]+", "-", name.lower().replace("(r)", "")).strip("-")


def write_result(out: str | None, stem: str, record: dict, table: str) -> None:
    """A bench module's result: `stem`.json (the record) and `stem`.md (its table, also printed) in `out`, by default
    this machine's folder under bench/results/."""
    out = out or os.path.join("bench", "results", results_folder())
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{stem}.json"), "w") as f:
        json.dump(record, f, indent=1)
    with open(os.path.join(out, f"{stem}.md"), "w") as f:
        f.write(table)
    print(table)


def us_per_call(call, calls: int, device: torch.device) -> float:
    """Microseconds per call over `calls` calls back to back: between two CUDA events on a GPU (no synchronisation
    between calls), by the wall clock on the CPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(calls):
            call()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / calls * 1e3
    began = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - began) / calls * 1e6
