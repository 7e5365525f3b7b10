"""The CUDA device through cuda.bindings, in one place: the driver's first GPU, its name and compute
capability, and `cuda_call`, which turns the driver's (err, *values) into values or an exception."""
from __future__ import annotations


def cuda_call(result):
    """cuda.bindings returns (err, *values): raise on error, naming it; return the values."""
    from cuda.bindings import driver

    err, *values = result
    if err != driver.CUresult.CUDA_SUCCESS:
        name = driver.cuGetErrorName(err)[1]
        raise RuntimeError(f"CUDA error {name.decode() if isinstance(name, bytes) else name}")
    return values[0] if len(values) == 1 else values


def first_device():
    """The driver initialised and its first GPU (a CUdevice); raises RuntimeError without one."""
    from cuda.bindings import driver

    cuda_call(driver.cuInit(0))
    return cuda_call(driver.cuDeviceGet(0))


def compute_capability() -> int | None:
    """The first GPU's compute capability as 86 for 8.6, or None without a GPU or cuda.bindings."""
    try:
        from cuda.bindings import driver

        dev = first_device()
        a = driver.CUdevice_attribute
        major = cuda_call(driver.cuDeviceGetAttribute(a.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev))
        minor = cuda_call(driver.cuDeviceGetAttribute(a.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev))
        return major * 10 + minor
    except Exception:  # no driver, no device: this machine builds only for a named capability
        return None


def gpu_name() -> str | None:
    """The first GPU's name, or None without one."""
    try:
        from cuda.bindings import driver

        name = cuda_call(driver.cuDeviceGetName(64, first_device()))
        return name.split(b"\0")[0].decode()
    except Exception:
        return None


def retain_primary_context():
    """The first GPU's primary context, retained and made current (release with `release_primary_context`)."""
    from cuda.bindings import driver

    ctx = cuda_call(driver.cuDevicePrimaryCtxRetain(first_device()))
    cuda_call(driver.cuCtxSetCurrent(ctx))
    return ctx


def release_primary_context() -> None:
    """Undo one `retain_primary_context`."""
    from cuda.bindings import driver

    cuda_call(driver.cuDevicePrimaryCtxRelease(first_device()))
