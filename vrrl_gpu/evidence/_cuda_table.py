"""The data tables behind failure classification: every CUDA error code, every CUDA library status.

Sources
-------
* ``cudaError_t``: ``enum cudaError`` in ``driver_types.h`` of the CUDA 13.0
  toolkit (``/usr/local/cuda-13.0/include``, lines 192-1124, 132 codes).
* ``CUresult``: ``typedef enum cudaError_enum`` in ``cuda.h`` of the same
  toolkit (line 2511, 101 codes). Numbers agree with the runtime wherever both
  define a code; where the names differ, both are kept.
* Codes added after 13.0 (column ``since``): 917 StreamDetached (13.1 headers),
  918 GraphRecaptureFailure (13.3 headers), 10 VersionTranslation (named by the
  13.2 cudart that CuPy 14.2 links, absent from the 13.0 headers).
  ``cudaErrorFabricNotReady`` (documented for a later 13.x, number unpublished)
  is *not* in the table: it decodes as Unclassified until its number is known.
* CUDA 12.x defines a subset of these numbers with the same meaning (the
  renumbering happened at 10.1), so one table serves 12.x and 13.x.
* ``sticky``: exactly the codes whose header comment says the process "must be
  terminated and relaunched" (or, for 710, "the device cannot be used again").
* Library statuses: ``nvrtc.h`` of NVRTC 13.5 (the nvidia-cuda-nvrtc wheel),
  and the public ``cublas_api.h``, ``cufft.h`` (12.x and 13.x; 10, 12 and 15
  were removed in cuFFT 12 / CUDA 13 and are kept for old logs), ``curand.h``,
  ``cusolver_common.h`` and ``cusparse.h``.

Classes follow the ground rules in docs/error-classification.md (generated
from these tables by :func:`vrrl_gpu.evidence._docs.render_classification_markdown`).
These numbers are written into logs: rows may be added, never renumbered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from vrrl_gpu.format._layout import FailureClass

__all__ = [
    "CudaErrorInfo",
    "LibraryStatusInfo",
    "CUDA_ERROR_TABLE",
    "CUDA_NAME_TO_CODE",
    "CUDA_TEXT_TO_CODE",
    "STARTUP_CONFIG_CODES",
    "NVML_RECLASSIFIABLE_CODES",
    "DEVICE_LOSS_XIDS",
    "NVRTC_STATUS_TABLE",
    "CUBLAS_STATUS_TABLE",
    "CUFFT_RESULT_TABLE",
    "CURAND_STATUS_TABLE",
    "CUSOLVER_STATUS_TABLE",
    "CUSPARSE_STATUS_TABLE",
    "MESSAGE_MARKERS",
]

DL = FailureClass.DEVICE_LOSS
TQ = FailureClass.TRANSIENT_QUEUE
PB = FailureClass.PROGRAM_BUG
UN = FailureClass.UNCLASSIFIED
S = True  # sticky
_ = False


@dataclass(frozen=True, slots=True)
class CudaErrorInfo:
    """One ``cudaError_t`` / ``CUresult`` code.

    ``runtime_name`` is None for driver-only codes, ``driver_name`` for
    runtime-only ones. ``since`` is empty for codes in the 13.0 headers.
    ``text`` is ``cudaGetErrorString``'s wording, filled in for the codes the
    CPU twin raises (its errors read like the real runtime's) and the codes
    whose wording PyTorch and Triton messages carry without the code
    (``CUDA error: <text>``), empty elsewhere.
    """

    code: int
    runtime_name: str | None
    driver_name: str | None
    failure_class: FailureClass
    sticky: bool
    reason: str
    since: str = ""
    text: str = ""

    @property
    def name(self) -> str:
        """The runtime name where there is one (``cudaErrorIllegalAddress``), else the driver name."""
        return self.runtime_name or self.driver_name or f"CUDA error {self.code}"


@dataclass(frozen=True, slots=True)
class LibraryStatusInfo:
    """One status code of a CUDA library (NVRTC, cuBLAS, cuFFT, cuRAND, cuSOLVER, cuSPARSE)."""

    status: int
    name: str
    failure_class: FailureClass
    reason: str


def _r(
    code: int,
    rt: str | None,
    drv: str | None,
    cls: FailureClass,
    sticky: bool,
    reason: str,
    since: str = "",
    *,
    text: str = "",
) -> CudaErrorInfo:
    return CudaErrorInfo(code, rt, drv, cls, sticky, reason, since, text)


# _r(code, runtime name, driver name, class, sticky, one-line reason[, since][, text=cudaGetErrorString])
_CUDA_ROWS: tuple[CudaErrorInfo, ...] = (
    _r(1, "cudaErrorInvalidValue", "CUDA_ERROR_INVALID_VALUE", PB, _, "an API argument is out of range",
     text="invalid argument"),
    _r(2, "cudaErrorMemoryAllocation", "CUDA_ERROR_OUT_OF_MEMORY", TQ, _,
     "device memory allocation failed; retry after freeing memory or backing off",
     text="out of memory"),
    _r(3, "cudaErrorInitializationError", "CUDA_ERROR_NOT_INITIALIZED", DL, _,
     "the driver could not be initialised; after the device had been working it has vanished"),
    _r(4, "cudaErrorCudartUnloading", "CUDA_ERROR_DEINITIALIZED", UN, _,
     "called during process shutdown, after the driver was unloaded"),
    _r(5, "cudaErrorProfilerDisabled", "CUDA_ERROR_PROFILER_DISABLED", UN, _,
     "profiler not initialised for this run (an external profiling tool is attached)"),
    _r(6, "cudaErrorProfilerNotInitialized", "CUDA_ERROR_PROFILER_NOT_INITIALIZED", PB, _,
     "profiler API misuse (deprecated since CUDA 5.0)"),
    _r(7, "cudaErrorProfilerAlreadyStarted", "CUDA_ERROR_PROFILER_ALREADY_STARTED", PB, _,
     "profiler already started (deprecated since CUDA 5.0)"),
    _r(8, "cudaErrorProfilerAlreadyStopped", "CUDA_ERROR_PROFILER_ALREADY_STOPPED", PB, _,
     "profiler already stopped (deprecated since CUDA 5.0)"),
    _r(9, "cudaErrorInvalidConfiguration", None, PB, _,
     "launch asks for more threads, blocks or shared memory than the device allows",
     text="invalid configuration argument"),
    _r(10, "cudaErrorVersionTranslation", None, UN, _,
     "driver newer than the runtime returned parameters the runtime cannot translate", "13.2"),
    _r(12, "cudaErrorInvalidPitchValue", None, PB, _, "a pitch argument is out of range"),
    _r(13, "cudaErrorInvalidSymbol", None, PB, _, "the symbol passed is not a valid device symbol"),
    _r(16, "cudaErrorInvalidHostPointer", None, PB, _, "invalid host pointer (deprecated since CUDA 10.1)"),
    _r(17, "cudaErrorInvalidDevicePointer", None, PB, _,
     "invalid device pointer (deprecated since CUDA 10.1)"),
    _r(18, "cudaErrorInvalidTexture", None, PB, _, "the texture passed is not valid"),
    _r(19, "cudaErrorInvalidTextureBinding", None, PB, _, "the texture binding is not valid"),
    _r(20, "cudaErrorInvalidChannelDescriptor", None, PB, _, "invalid channel descriptor"),
    _r(21, "cudaErrorInvalidMemcpyDirection", None, PB, _, "the memcpy direction is not a cudaMemcpyKind"),
    _r(22, "cudaErrorAddressOfConstant", None, PB, _,
     "address of a constant taken (deprecated since CUDA 3.1)"),
    _r(23, "cudaErrorTextureFetchFailed", None, PB, _,
     "emulated texture fetch failed (deprecated since CUDA 3.1)"),
    _r(24, "cudaErrorTextureNotBound", None, PB, _, "emulated texture not bound (deprecated since CUDA 3.1)"),
    _r(25, "cudaErrorSynchronizationError", None, UN, _,
     "emulated synchronisation failed (deprecated since CUDA 3.1)"),
    _r(26, "cudaErrorInvalidFilterSetting", None, PB, _, "linear filtering of a non-float texture"),
    _r(27, "cudaErrorInvalidNormSetting", None, PB, _, "unsupported type read as a normalised float"),
    _r(28, "cudaErrorMixedDeviceExecution", None, PB, _,
     "device and emulation code mixed (deprecated since CUDA 3.1)"),
    _r(31, "cudaErrorNotYetImplemented", None, UN, _, "API call not implemented (deprecated since CUDA 4.1)"),
    _r(32, "cudaErrorMemoryValueTooLarge", None, PB, _,
     "emulated pointer beyond 32 bits (deprecated since CUDA 3.1)"),
    _r(34, "cudaErrorStubLibrary", "CUDA_ERROR_STUB_LIBRARY", UN, _,
     "the loaded libcuda is a stub, not a real driver (installation)"),
    _r(35, "cudaErrorInsufficientDriver", None, UN, _,
     "the installed driver is older than the CUDA runtime (installation)"),
    _r(36, "cudaErrorCallRequiresNewerDriver", "CUDA_ERROR_CALL_REQUIRES_NEWER_DRIVER", UN, _,
     "this API call needs a newer driver (installation)"),
    _r(37, "cudaErrorInvalidSurface", None, PB, _, "the surface passed is not valid"),
    _r(43, "cudaErrorDuplicateVariableName", None, PB, _, "two device variables share one name"),
    _r(44, "cudaErrorDuplicateTextureName", None, PB, _, "two textures share one name"),
    _r(45, "cudaErrorDuplicateSurfaceName", None, PB, _, "two surfaces share one name"),
    _r(46, "cudaErrorDevicesUnavailable", "CUDA_ERROR_DEVICE_UNAVAILABLE", TQ, _,
     "all devices busy or unavailable (exclusive or prohibited compute mode); retry later"),
    _r(49, "cudaErrorIncompatibleDriverContext", None, PB, _,
     "a driver-API context incompatible with the runtime is current"),
    _r(52, "cudaErrorMissingConfiguration", None, PB, _, "kernel launched without a launch configuration"),
    _r(53, "cudaErrorPriorLaunchFailure", None, PB, _,
     "an earlier emulated launch failed (deprecated since CUDA 3.1)"),
    _r(65, "cudaErrorLaunchMaxDepthExceeded", None, PB, _, "device-side launch nested too deep"),
    _r(66, "cudaErrorLaunchFileScopedTex", None, PB, _,
     "device-side launch of a kernel using file-scoped textures"),
    _r(67, "cudaErrorLaunchFileScopedSurf", None, PB, _,
     "device-side launch of a kernel using file-scoped surfaces"),
    _r(68, "cudaErrorSyncDepthExceeded", None, PB, _, "device-side synchronise beyond the sync depth limit"),
    _r(69, "cudaErrorLaunchPendingCountExceeded", None, PB, _,
     "device-side launches exceed the pending launch count limit"),
    _r(98, "cudaErrorInvalidDeviceFunction", None, PB, _,
     "the kernel does not exist or was not compiled for this architecture",
     text="invalid device function"),
    _r(100, "cudaErrorNoDevice", "CUDA_ERROR_NO_DEVICE", DL, _,
     "no CUDA device detected; after the device had been working it has vanished (Xid 79)"),
    _r(101, "cudaErrorInvalidDevice", "CUDA_ERROR_INVALID_DEVICE", DL, _,
     "the device ordinal is not a valid device; after the device had been working it has vanished"),
    _r(102, "cudaErrorDeviceNotLicensed", "CUDA_ERROR_DEVICE_NOT_LICENSED", UN, _,
     "the device has no valid grid licence"),
    _r(103, "cudaErrorSoftwareValidityNotEstablished", None, UN, _,
     "the runtime's or driver's start-up self-tests failed"),
    _r(127, "cudaErrorStartupFailure", None, UN, _, "internal start-up failure of the CUDA runtime"),
    _r(200, "cudaErrorInvalidKernelImage", "CUDA_ERROR_INVALID_IMAGE", PB, _, "the kernel image is invalid"),
    _r(201, "cudaErrorDeviceUninitialized", "CUDA_ERROR_INVALID_CONTEXT", PB, _,
     "no context current, or the context handle was destroyed (lifecycle bug)"),
    _r(202, None, "CUDA_ERROR_CONTEXT_ALREADY_CURRENT", PB, _, "context already current (deprecated)"),
    _r(205, "cudaErrorMapBufferObjectFailed", "CUDA_ERROR_MAP_FAILED", PB, _,
     "a buffer object could not be mapped"),
    _r(206, "cudaErrorUnmapBufferObjectFailed", "CUDA_ERROR_UNMAP_FAILED", PB, _,
     "a buffer object could not be unmapped"),
    _r(207, "cudaErrorArrayIsMapped", "CUDA_ERROR_ARRAY_IS_MAPPED", PB, _,
     "the array is mapped and cannot be destroyed"),
    _r(208, "cudaErrorAlreadyMapped", "CUDA_ERROR_ALREADY_MAPPED", PB, _, "the resource is already mapped"),
    _r(209, "cudaErrorNoKernelImageForDevice", "CUDA_ERROR_NO_BINARY_FOR_GPU", PB, _,
     "no kernel image for this device's architecture",
     text="no kernel image is available for execution on the device"),
    _r(210, "cudaErrorAlreadyAcquired", "CUDA_ERROR_ALREADY_ACQUIRED", PB, _,
     "the resource is already acquired"),
    _r(211, "cudaErrorNotMapped", "CUDA_ERROR_NOT_MAPPED", PB, _, "the resource is not mapped"),
    _r(212, "cudaErrorNotMappedAsArray", "CUDA_ERROR_NOT_MAPPED_AS_ARRAY", PB, _,
     "the mapped resource is not available as an array"),
    _r(213, "cudaErrorNotMappedAsPointer", "CUDA_ERROR_NOT_MAPPED_AS_POINTER", PB, _,
     "the mapped resource is not available as a pointer"),
    _r(214, "cudaErrorECCUncorrectable", "CUDA_ERROR_ECC_UNCORRECTABLE", DL, _,
     "uncorrectable ECC error in device memory (Xid 48/94/95)",
     text="uncorrectable ECC error encountered"),
    _r(215, "cudaErrorUnsupportedLimit", "CUDA_ERROR_UNSUPPORTED_LIMIT", PB, _,
     "the cudaLimit is not supported by this device"),
    _r(216, "cudaErrorDeviceAlreadyInUse", "CUDA_ERROR_CONTEXT_ALREADY_IN_USE", TQ, _,
     "the exclusive-thread device is in use by another thread; retry later"),
    _r(217, "cudaErrorPeerAccessUnsupported", "CUDA_ERROR_PEER_ACCESS_UNSUPPORTED", PB, _,
     "peer access is not supported between these devices (check canAccessPeer first)"),
    _r(218, "cudaErrorInvalidPtx", "CUDA_ERROR_INVALID_PTX", PB, _, "PTX JIT compilation failed"),
    _r(219, "cudaErrorInvalidGraphicsContext", "CUDA_ERROR_INVALID_GRAPHICS_CONTEXT", PB, _,
     "error with the OpenGL or DirectX context"),
    _r(220, "cudaErrorNvlinkUncorrectable", "CUDA_ERROR_NVLINK_UNCORRECTABLE", DL, _,
     "uncorrectable NVLink error (link hardware)"),
    _r(221, "cudaErrorJitCompilerNotFound", "CUDA_ERROR_JIT_COMPILER_NOT_FOUND", UN, _,
     "the PTX JIT compiler library was not found (installation; ship a cubin)"),
    _r(222, "cudaErrorUnsupportedPtxVersion", "CUDA_ERROR_UNSUPPORTED_PTX_VERSION", UN, _,
     "PTX from a toolchain newer than the driver (toolkit/driver mismatch; ship a cubin)"),
    _r(223, "cudaErrorJitCompilationDisabled", "CUDA_ERROR_JIT_COMPILATION_DISABLED", UN, _,
     "PTX JIT compilation is disabled (ship a cubin)"),
    _r(224, "cudaErrorUnsupportedExecAffinity", "CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY", UN, _,
     "execution affinity not supported by the device"),
    _r(225, "cudaErrorUnsupportedDevSideSync", "CUDA_ERROR_UNSUPPORTED_DEVSIDE_SYNC", PB, _,
     "the kernel calls cudaDeviceSynchronize from device code, which is unsupported"),
    _r(226, "cudaErrorContained", "CUDA_ERROR_CONTAINED", DL, S,
     "contained hardware error (or a bad NVLink peer access); the process must restart"),
    _r(300, "cudaErrorInvalidSource", "CUDA_ERROR_INVALID_SOURCE", PB, _, "the kernel source is invalid"),
    _r(301, "cudaErrorFileNotFound", "CUDA_ERROR_FILE_NOT_FOUND", PB, _, "the module file was not found"),
    _r(302, "cudaErrorSharedObjectSymbolNotFound", "CUDA_ERROR_SHARED_OBJECT_SYMBOL_NOT_FOUND", UN, _,
     "a link to a shared object failed to resolve (installation)"),
    _r(303, "cudaErrorSharedObjectInitFailed", "CUDA_ERROR_SHARED_OBJECT_INIT_FAILED", UN, _,
     "a shared object failed to initialise (installation)"),
    _r(304, "cudaErrorOperatingSystem", "CUDA_ERROR_OPERATING_SYSTEM", UN, _, "an OS call failed"),
    _r(400, "cudaErrorInvalidResourceHandle", "CUDA_ERROR_INVALID_HANDLE", PB, _,
     "a stream, event or other handle is stale or invalid",
     text="invalid resource handle"),
    _r(401, "cudaErrorIllegalState", "CUDA_ERROR_ILLEGAL_STATE", PB, _,
     "a resource is not in a valid state for this call",
     text="the operation cannot be performed in the present state"),
    _r(402, "cudaErrorLossyQuery", "CUDA_ERROR_LOSSY_QUERY", PB, _,
     "introspection would discard important information"),
    _r(500, "cudaErrorSymbolNotFound", "CUDA_ERROR_NOT_FOUND", PB, _,
     "a named symbol or function was not found",
     text="named symbol not found"),
    _r(600, "cudaErrorNotReady", "CUDA_ERROR_NOT_READY", TQ, _,
     "asynchronous work has not completed yet (not an error; poll again)"),
    _r(700, "cudaErrorIllegalAddress", "CUDA_ERROR_ILLEGAL_ADDRESS", PB, S,
     "a kernel loaded or stored through an invalid address (Xid 31); the process must restart",
     text="an illegal memory access was encountered"),
    _r(701, "cudaErrorLaunchOutOfResources", "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", PB, _,
     "too many registers per thread times threads, or too many kernel arguments",
     text="too many resources requested for launch"),
    _r(702, "cudaErrorLaunchTimeout", "CUDA_ERROR_LAUNCH_TIMEOUT", DL, S,
     "the display watchdog killed a long-running kernel; the process must restart",
     text="the launch timed out and was terminated"),
    _r(703, "cudaErrorLaunchIncompatibleTexturing", "CUDA_ERROR_LAUNCH_INCOMPATIBLE_TEXTURING", PB, _,
     "launch uses an incompatible texturing mode"),
    _r(704, "cudaErrorPeerAccessAlreadyEnabled", "CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED", PB, _,
     "peer access is already enabled"),
    _r(705, "cudaErrorPeerAccessNotEnabled", "CUDA_ERROR_PEER_ACCESS_NOT_ENABLED", PB, _,
     "peer access was never enabled"),
    _r(708, "cudaErrorSetOnActiveProcess", "CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE", PB, _,
     "device flags set after the runtime or primary context was initialised"),
    _r(709, "cudaErrorContextIsDestroyed", "CUDA_ERROR_CONTEXT_IS_DESTROYED", PB, _,
     "the current context was destroyed (lifecycle bug)"),
    _r(710, "cudaErrorAssert", "CUDA_ERROR_ASSERT", PB, S,
     "a device-side assert fired (or a trap); the process must restart",
     text="device-side assert triggered"),
    _r(711, "cudaErrorTooManyPeers", "CUDA_ERROR_TOO_MANY_PEERS", PB, _,
     "peer-access hardware resources exhausted"),
    _r(712, "cudaErrorHostMemoryAlreadyRegistered", "CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED", PB, _,
     "the host range is already registered",
     text="part or all of the requested memory range is already mapped"),
    _r(713, "cudaErrorHostMemoryNotRegistered", "CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED", PB, _,
     "the host pointer was never registered",
     text="pointer does not correspond to a registered memory region"),
    _r(714, "cudaErrorHardwareStackError", "CUDA_ERROR_HARDWARE_STACK_ERROR", PB, S,
     "call-stack corruption or stack overflow in a kernel; the process must restart",
     text="hardware stack error"),
    _r(715, "cudaErrorIllegalInstruction", "CUDA_ERROR_ILLEGAL_INSTRUCTION", PB, S,
     "a kernel executed an illegal instruction (or a trap on some GPUs); the process must restart",
     text="an illegal instruction was encountered"),
    _r(716, "cudaErrorMisalignedAddress", "CUDA_ERROR_MISALIGNED_ADDRESS", PB, S,
     "a kernel loaded or stored through a misaligned address; the process must restart",
     text="misaligned address"),
    _r(717, "cudaErrorInvalidAddressSpace", "CUDA_ERROR_INVALID_ADDRESS_SPACE", PB, S,
     "a kernel used an address in the wrong address space; the process must restart"),
    _r(718, "cudaErrorInvalidPc", "CUDA_ERROR_INVALID_PC", PB, S,
     "a kernel jumped to an invalid program counter; the process must restart",
     text="invalid program counter"),
    _r(719, "cudaErrorLaunchFailure", "CUDA_ERROR_LAUNCH_FAILED", PB, S,
     "a kernel faulted (trap, bad pointer, shared-memory overrun); the process must restart",
     text="unspecified launch failure"),
    _r(720, "cudaErrorCooperativeLaunchTooLarge", "CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE", PB, _,
     "cooperative launch has more blocks than can be co-resident"),
    _r(721, "cudaErrorTensorMemoryLeak", "CUDA_ERROR_TENSOR_MEMORY_LEAK", PB, S,
     "a kernel exited without freeing its tensor memory; the process must restart"),
    _r(800, "cudaErrorNotPermitted", "CUDA_ERROR_NOT_PERMITTED", UN, _, "the operation is not permitted"),
    _r(801, "cudaErrorNotSupported", "CUDA_ERROR_NOT_SUPPORTED", UN, _,
     "the operation is not supported on this system or device"),
    _r(802, "cudaErrorSystemNotReady", "CUDA_ERROR_SYSTEM_NOT_READY", DL, _,
     "the system is not ready for CUDA work (a daemon such as fabric manager is missing)"),
    _r(803, "cudaErrorSystemDriverMismatch", "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH", DL, _,
     "display driver and CUDA driver versions differ; the node is unusable"),
    _r(804, "cudaErrorCompatNotSupportedOnDevice", "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE", UN, _,
     "forward-compatibility install on hardware that does not support it"),
    _r(805, "cudaErrorMpsConnectionFailed", "CUDA_ERROR_MPS_CONNECTION_FAILED", DL, _,
     "the MPS client lost or could not reach the MPS daemon or server"),
    _r(806, "cudaErrorMpsRpcFailure", "CUDA_ERROR_MPS_RPC_FAILURE", DL, _,
     "a remote call between MPS client and server failed"),
    _r(807, "cudaErrorMpsServerNotReady", "CUDA_ERROR_MPS_SERVER_NOT_READY", TQ, _,
     "the MPS server is not ready (recovering); retry later"),
    _r(808, "cudaErrorMpsMaxClientsReached", "CUDA_ERROR_MPS_MAX_CLIENTS_REACHED", TQ, _,
     "the MPS server is at its client limit; retry later"),
    _r(809, "cudaErrorMpsMaxConnectionsReached", "CUDA_ERROR_MPS_MAX_CONNECTIONS_REACHED", TQ, _,
     "the MPS server is at its connection limit; retry later"),
    _r(810, "cudaErrorMpsClientTerminated", "CUDA_ERROR_MPS_CLIENT_TERMINATED", DL, S,
     "the MPS server terminated this client; the process must restart"),
    _r(811, "cudaErrorCdpNotSupported", "CUDA_ERROR_CDP_NOT_SUPPORTED", UN, _,
     "dynamic parallelism unsupported in this configuration (for example under MPS)"),
    _r(812, "cudaErrorCdpVersionMismatch", "CUDA_ERROR_CDP_VERSION_MISMATCH", UN, _,
     "mixed dynamic-parallelism versions (toolchain mismatch)"),
    _r(900, "cudaErrorStreamCaptureUnsupported", "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED", PB, _,
     "operation not permitted while the stream is capturing",
     text="operation not permitted when stream is capturing"),
    _r(901, "cudaErrorStreamCaptureInvalidated", "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED", PB, _,
     "the capture sequence was invalidated by an earlier error",
     text="operation failed due to a previous error during capture"),
    _r(902, "cudaErrorStreamCaptureMerge", "CUDA_ERROR_STREAM_CAPTURE_MERGE", PB, _,
     "operation would merge two independent captures"),
    _r(903, "cudaErrorStreamCaptureUnmatched", "CUDA_ERROR_STREAM_CAPTURE_UNMATCHED", PB, _,
     "the capture was not begun on this stream"),
    _r(904, "cudaErrorStreamCaptureUnjoined", "CUDA_ERROR_STREAM_CAPTURE_UNJOINED", PB, _,
     "the capture forked without joining back"),
    _r(905, "cudaErrorStreamCaptureIsolation", "CUDA_ERROR_STREAM_CAPTURE_ISOLATION", PB, _,
     "a dependency would cross the capture boundary"),
    _r(906, "cudaErrorStreamCaptureImplicit", "CUDA_ERROR_STREAM_CAPTURE_IMPLICIT", PB, _,
     "an implicit dependency on a capture from the legacy stream"),
    _r(907, "cudaErrorCapturedEvent", "CUDA_ERROR_CAPTURED_EVENT", PB, _,
     "operation on an event last recorded in a capturing stream"),
    _r(908, "cudaErrorStreamCaptureWrongThread", "CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD", PB, _,
     "capture ended from a different thread than it began"),
    _r(909, "cudaErrorTimeout", "CUDA_ERROR_TIMEOUT", TQ, _, "a bounded wait expired; retry"),
    _r(910, "cudaErrorGraphExecUpdateFailure", "CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE", PB, _,
     "the graph update violates instantiated-graph constraints"),
    _r(911, "cudaErrorExternalDevice", "CUDA_ERROR_EXTERNAL_DEVICE", DL, S,
     "an external device signalled an error; the process must restart"),
    _r(912, "cudaErrorInvalidClusterSize", "CUDA_ERROR_INVALID_CLUSTER_SIZE", PB, _,
     "the launch's cluster configuration is invalid"),
    _r(913, "cudaErrorFunctionNotLoaded", "CUDA_ERROR_FUNCTION_NOT_LOADED", PB, _,
     "the function handle is not loaded"),
    _r(914, "cudaErrorInvalidResourceType", "CUDA_ERROR_INVALID_RESOURCE_TYPE", PB, _,
     "a device resource of the wrong type was passed"),
    _r(915, "cudaErrorInvalidResourceConfiguration", "CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION", PB, _,
     "device resources insufficient or inapplicable for the operation"),
    _r(916, None, "CUDA_ERROR_KEY_ROTATION", UN, _, "confidential-computing key rotation failed"),
    _r(917, "cudaErrorStreamDetached", "CUDA_ERROR_STREAM_DETACHED", PB, _,
     "the stream's green context was destroyed (lifecycle bug)", "13.1"),
    _r(918, "cudaErrorGraphRecaptureFailure", "CUDA_ERROR_GRAPH_RECAPTURE_FAILURE", PB, _,
     "graph recapture failed and was terminated", "13.3"),
    _r(999, "cudaErrorUnknown", "CUDA_ERROR_UNKNOWN", UN, _,
     "unknown internal error; often follows a device loss (check NVML or the kernel log for an Xid)",
     text="unknown error"),
    _r(10000, "cudaErrorApiFailureBase", None, UN, _, "base of internal API failure codes (deprecated)"),
)


def _build_cuda_table() -> Mapping[int, CudaErrorInfo]:
    table: dict[int, CudaErrorInfo] = {}
    for info in _CUDA_ROWS:
        if info.code in table:  # pragma: no cover - guarded by a test
            raise AssertionError(f"duplicate CUDA error code {info.code}")
        table[info.code] = info
    return MappingProxyType(table)


#: Every ``cudaError_t`` / ``CUresult`` code (0 = success is not an error and is not listed).
CUDA_ERROR_TABLE: Mapping[int, CudaErrorInfo] = _build_cuda_table()

#: Runtime and driver names → code (``cudaErrorIllegalAddress`` and ``CUDA_ERROR_ILLEGAL_ADDRESS`` → 700).
CUDA_NAME_TO_CODE: Mapping[str, int] = MappingProxyType(
    {n: i.code for i in CUDA_ERROR_TABLE.values() for n in (i.runtime_name, i.driver_name) if n}
)

#: ``cudaGetErrorString`` wordings → code, for messages that quote the wording without a code or name
#: (PyTorch's ``CUDA error: an illegal memory access was encountered``, Triton's ``Triton Error [CUDA]: …``).
CUDA_TEXT_TO_CODE: Mapping[str, int] = MappingProxyType(
    {i.text: i.code for i in CUDA_ERROR_TABLE.values() if i.text}
)

#: Codes that mean "the device vanished" only if it had been working; at start-up
#: they are configuration problems (no driver, no visible device, bad ordinal).
STARTUP_CONFIG_CODES: frozenset[int] = frozenset({3, 100, 101})

#: Codes an NVML report of a lost GPU or a device-loss Xid turns into DeviceLoss.
NVML_RECLASSIFIABLE_CODES: frozenset[int] = frozenset({719, 999})

#: Xid numbers of device-loss kind (NVIDIA's Xid catalogue), with what they mean.
DEVICE_LOSS_XIDS: Mapping[int, str] = MappingProxyType({
    48: "double-bit ECC error",
    74: "NVLink error",
    79: "GPU has fallen off the bus",
    94: "contained ECC error",
    95: "uncontained ECC error",
    119: "GSP RPC timeout",
    120: "GSP error",
})


def _lib(rows: tuple[tuple[int, str, FailureClass, str], ...]) -> Mapping[int, LibraryStatusInfo]:
    return MappingProxyType({s: LibraryStatusInfo(s, n, c, r) for s, n, c, r in rows})


NVRTC_STATUS_TABLE = _lib((
    (0, "NVRTC_SUCCESS", UN, "success status carried by an error object"),
    (1, "NVRTC_ERROR_OUT_OF_MEMORY", TQ, "NVRTC ran out of host memory; retry"),
    (2, "NVRTC_ERROR_PROGRAM_CREATION_FAILURE", UN, "NVRTC could not create the program"),
    (3, "NVRTC_ERROR_INVALID_INPUT", PB, "invalid argument to NVRTC"),
    (4, "NVRTC_ERROR_INVALID_PROGRAM", PB, "invalid NVRTC program handle"),
    (5, "NVRTC_ERROR_INVALID_OPTION", PB, "invalid compiler option"),
    (6, "NVRTC_ERROR_COMPILATION", PB, "the kernel source failed to compile"),
    (7, "NVRTC_ERROR_BUILTIN_OPERATION_FAILURE", UN, "an NVRTC built-in operation failed"),
    (8, "NVRTC_ERROR_NO_NAME_EXPRESSIONS_AFTER_COMPILATION", PB, "name expression added after compiling"),
    (9, "NVRTC_ERROR_NO_LOWERED_NAMES_BEFORE_COMPILATION", PB, "lowered name asked for before compiling"),
    (10, "NVRTC_ERROR_NAME_EXPRESSION_NOT_VALID", PB, "the name expression is not valid"),
    (11, "NVRTC_ERROR_INTERNAL_ERROR", UN, "internal NVRTC error"),
    (12, "NVRTC_ERROR_TIME_FILE_WRITE_FAILED", UN, "could not write the compile-time file"),
    (13, "NVRTC_ERROR_NO_PCH_CREATE_ATTEMPTED", PB, "no precompiled header was attempted"),
    (14, "NVRTC_ERROR_PCH_CREATE_HEAP_EXHAUSTED", TQ, "precompiled-header heap exhausted"),
    (15, "NVRTC_ERROR_PCH_CREATE", UN, "precompiled header could not be created"),
    (16, "NVRTC_ERROR_CANCELLED", UN, "compilation cancelled by a callback"),
    (17, "NVRTC_ERROR_TIME_TRACE_FILE_WRITE_FAILED", UN, "could not write the time-trace file"),
    (18, "NVRTC_ERROR_BUSY", TQ, "NVRTC is busy; retry"),
))

CUBLAS_STATUS_TABLE = _lib((
    (0, "CUBLAS_STATUS_SUCCESS", UN, "success status carried by an error object"),
    (1, "CUBLAS_STATUS_NOT_INITIALIZED", UN, "cuBLAS not initialised (no handle, or CUDA setup failed)"),
    (3, "CUBLAS_STATUS_ALLOC_FAILED", TQ, "cuBLAS could not allocate memory; retry after freeing memory"),
    (7, "CUBLAS_STATUS_INVALID_VALUE", PB, "invalid argument to cuBLAS"),
    (8, "CUBLAS_STATUS_ARCH_MISMATCH", PB, "the call needs a feature this GPU architecture lacks"),
    (11, "CUBLAS_STATUS_MAPPING_ERROR", UN, "access to GPU memory space failed"),
    (13, "CUBLAS_STATUS_EXECUTION_FAILED", UN, "a cuBLAS kernel failed to execute (see the CUDA error)"),
    (14, "CUBLAS_STATUS_INTERNAL_ERROR", UN, "internal cuBLAS error"),
    (15, "CUBLAS_STATUS_NOT_SUPPORTED", PB, "the parameters are not supported"),
    (16, "CUBLAS_STATUS_LICENSE_ERROR", UN, "cuBLAS licence error"),
))

CUFFT_RESULT_TABLE = _lib((
    (0, "CUFFT_SUCCESS", UN, "success status carried by an error object"),
    (1, "CUFFT_INVALID_PLAN", PB, "invalid cuFFT plan handle"),
    (2, "CUFFT_ALLOC_FAILED", TQ, "cuFFT could not allocate memory; retry after freeing memory"),
    (3, "CUFFT_INVALID_TYPE", PB, "invalid transform type"),
    (4, "CUFFT_INVALID_VALUE", PB, "invalid argument to cuFFT"),
    (5, "CUFFT_INTERNAL_ERROR", UN, "internal cuFFT error"),
    (6, "CUFFT_EXEC_FAILED", UN, "a cuFFT kernel failed to execute (see the CUDA error)"),
    (7, "CUFFT_SETUP_FAILED", UN, "the cuFFT library failed to initialise"),
    (8, "CUFFT_INVALID_SIZE", PB, "invalid transform size"),
    (9, "CUFFT_UNALIGNED_DATA", PB, "unaligned data"),
    (10, "CUFFT_INCOMPLETE_PARAMETER_LIST", PB, "missing parameters (removed in cuFFT 12)"),
    (11, "CUFFT_INVALID_DEVICE", PB, "plan executed on a different GPU than it was created on"),
    (12, "CUFFT_PARSE_ERROR", UN, "internal plan database error (removed in cuFFT 12)"),
    (13, "CUFFT_NO_WORKSPACE", PB, "no workspace provided before executing the plan"),
    (14, "CUFFT_NOT_IMPLEMENTED", PB, "not implemented for these parameters"),
    (15, "CUFFT_LICENSE_ERROR", UN, "cuFFT licence error (removed in cuFFT 12)"),
    (16, "CUFFT_NOT_SUPPORTED", PB, "not supported for these parameters"),
    (17, "CUFFT_MISSING_DEPENDENCY", UN, "cuFFT could not find a dependency (installation)"),
    (18, "CUFFT_NVRTC_FAILURE", UN, "NVRTC failed inside cuFFT"),
    (19, "CUFFT_NVJITLINK_FAILURE", UN, "nvJitLink failed inside cuFFT"),
    (20, "CUFFT_NVSHMEM_FAILURE", UN, "NVSHMEM failed inside cuFFT"),
))

CURAND_STATUS_TABLE = _lib((
    (0, "CURAND_STATUS_SUCCESS", UN, "success status carried by an error object"),
    (100, "CURAND_STATUS_VERSION_MISMATCH", UN, "header and library versions differ (installation)"),
    (101, "CURAND_STATUS_NOT_INITIALIZED", UN, "generator not initialised"),
    (102, "CURAND_STATUS_ALLOCATION_FAILED", TQ, "cuRAND could not allocate memory; retry"),
    (103, "CURAND_STATUS_TYPE_ERROR", PB, "generator is the wrong type"),
    (104, "CURAND_STATUS_OUT_OF_RANGE", PB, "argument out of range"),
    (105, "CURAND_STATUS_LENGTH_NOT_MULTIPLE", PB, "length is not a multiple of the dimension"),
    (106, "CURAND_STATUS_DOUBLE_PRECISION_REQUIRED", PB, "the generator needs double precision"),
    (201, "CURAND_STATUS_LAUNCH_FAILURE", UN, "a cuRAND kernel launch failed (see the CUDA error)"),
    (202, "CURAND_STATUS_PREEXISTING_FAILURE", UN, "an earlier CUDA failure was pending on entry"),
    (203, "CURAND_STATUS_INITIALIZATION_FAILED", UN, "CUDA initialisation failed inside cuRAND"),
    (204, "CURAND_STATUS_ARCH_MISMATCH", PB, "the call needs a feature this GPU architecture lacks"),
    (999, "CURAND_STATUS_INTERNAL_ERROR", UN, "internal cuRAND error"),
))

CUSOLVER_STATUS_TABLE = _lib((
    (0, "CUSOLVER_STATUS_SUCCESS", UN, "success status carried by an error object"),
    (1, "CUSOLVER_STATUS_NOT_INITIALIZED", UN, "cuSOLVER not initialised"),
    (2, "CUSOLVER_STATUS_ALLOC_FAILED", TQ, "cuSOLVER could not allocate memory; retry after freeing memory"),
    (3, "CUSOLVER_STATUS_INVALID_VALUE", PB, "invalid argument to cuSOLVER"),
    (4, "CUSOLVER_STATUS_ARCH_MISMATCH", PB, "the call needs a feature this GPU architecture lacks"),
    (5, "CUSOLVER_STATUS_MAPPING_ERROR", UN, "access to GPU memory space failed"),
    (6, "CUSOLVER_STATUS_EXECUTION_FAILED", UN, "a cuSOLVER kernel failed to execute (see the CUDA error)"),
    (7, "CUSOLVER_STATUS_INTERNAL_ERROR", UN, "internal cuSOLVER error"),
    (8, "CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED", PB, "matrix type not supported"),
    (9, "CUSOLVER_STATUS_NOT_SUPPORTED", PB, "not supported for these parameters"),
    (10, "CUSOLVER_STATUS_ZERO_PIVOT", PB, "zero pivot (singular input)"),
    (11, "CUSOLVER_STATUS_INVALID_LICENSE", UN, "cuSOLVER licence error"),
    (12, "CUSOLVER_STATUS_IRS_PARAMS_NOT_INITIALIZED", PB, "iterative-refinement parameters not initialised"),
    (13, "CUSOLVER_STATUS_IRS_PARAMS_INVALID", PB, "iterative-refinement parameters invalid"),
    (14, "CUSOLVER_STATUS_IRS_PARAMS_INVALID_PREC", PB, "iterative-refinement precision invalid"),
    (15, "CUSOLVER_STATUS_IRS_PARAMS_INVALID_REFINE", PB, "iterative-refinement solver invalid"),
    (16, "CUSOLVER_STATUS_IRS_PARAMS_INVALID_MAXITER", PB, "iterative-refinement iteration limit invalid"),
    (20, "CUSOLVER_STATUS_IRS_INTERNAL_ERROR", UN, "internal iterative-refinement error"),
    (21, "CUSOLVER_STATUS_IRS_NOT_SUPPORTED", PB, "iterative refinement not supported for these parameters"),
    (22, "CUSOLVER_STATUS_IRS_OUT_OF_RANGE", PB, "iterative-refinement value out of range"),
    (23, "CUSOLVER_STATUS_IRS_NRHS_NOT_SUPPORTED_FOR_REFINE_GMRES", PB, "GMRES refinement needs nrhs = 1"),
    (25, "CUSOLVER_STATUS_IRS_INFOS_NOT_INITIALIZED", PB, "iterative-refinement info not initialised"),
    (26, "CUSOLVER_STATUS_IRS_INFOS_NOT_DESTROYED", PB, "iterative-refinement info not destroyed"),
    (30, "CUSOLVER_STATUS_IRS_MATRIX_SINGULAR", PB, "the matrix is singular"),
    (31, "CUSOLVER_STATUS_INVALID_WORKSPACE", PB, "invalid workspace"),
))

CUSPARSE_STATUS_TABLE = _lib((
    (0, "CUSPARSE_STATUS_SUCCESS", UN, "success status carried by an error object"),
    (1, "CUSPARSE_STATUS_NOT_INITIALIZED", UN, "cuSPARSE not initialised"),
    (2, "CUSPARSE_STATUS_ALLOC_FAILED", TQ, "cuSPARSE could not allocate memory; retry after freeing memory"),
    (3, "CUSPARSE_STATUS_INVALID_VALUE", PB, "invalid argument to cuSPARSE"),
    (4, "CUSPARSE_STATUS_ARCH_MISMATCH", PB, "the call needs a feature this GPU architecture lacks"),
    (5, "CUSPARSE_STATUS_MAPPING_ERROR", UN, "access to GPU memory space failed"),
    (6, "CUSPARSE_STATUS_EXECUTION_FAILED", UN, "a cuSPARSE kernel failed to execute (see the CUDA error)"),
    (7, "CUSPARSE_STATUS_INTERNAL_ERROR", UN, "internal cuSPARSE error"),
    (8, "CUSPARSE_STATUS_MATRIX_TYPE_NOT_SUPPORTED", PB, "matrix type not supported"),
    (9, "CUSPARSE_STATUS_ZERO_PIVOT", PB, "zero pivot (singular input)"),
    (10, "CUSPARSE_STATUS_NOT_SUPPORTED", PB, "not supported for these parameters"),
    (11, "CUSPARSE_STATUS_INSUFFICIENT_RESOURCES", TQ, "not enough resources for the computation; retry"),
))

#: Case-insensitive message markers for exceptions that carry no CUDA status, in
#: priority order. Messages are matched after lower-casing and turning ``_`` and
#: ``-`` into spaces, on word boundaries (so ``VK_ERROR_DEVICE_LOST`` matches
#: "device lost").
MESSAGE_MARKERS: tuple[tuple[FailureClass, tuple[str, ...]], ...] = (
    (DL, (
        "device lost", "context lost", "gpu reset", "device reset", "gpu lost", "gpu is lost",
        "lost device", "fallen off the bus", "fell off the bus", "device removed", "device hung",
        "gpu hang", "gpu hung", "uncorrectable ecc", "ecc error", "xid", "adapter lost", "adapter removed",
    )),
    (TQ, (
        "queue full", "queue is full", "timed out", "timeout", "out of memory", "try again",
        "temporarily unavailable", "resource exhausted", "resources exhausted", "busy",
        "would block", "not ready",
    )),
    (PB, (
        "compile failed", "compilation failed", "failed to compile", "compile error", "compilation error",
        "invalid program", "invalid kernel", "validation failed", "validation error", "invalid argument",
        "invalid configuration", "illegal address", "illegal memory access", "illegal instruction",
        "misaligned address", "device side assert", "assertion failed", "out of bounds",
    )),
)
