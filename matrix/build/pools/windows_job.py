"""Windows only: the portable pool's workers die with the process that started them.

A Job Object whose limits include JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE terminates every
process in it when its last handle closes. This process holds the only handle (created with
no security attributes, so no child inherits it) and never closes it: however this process
ends (Ctrl-C, TerminateProcess, a crash), Windows closes the handle and kills its workers.
That is what PR_SET_PDEATHSIG gives a worker on Linux (`matrix.build.worker`).

Nothing here can run on the Linux machines the project is tested on: docs/platforms.md
lists the Win32 calls and the reference pages each line was checked against. On Linux the
tests check the structure layouts below, and mypy checks the calls against the Windows stubs
(`mypy --platform win32`).
"""

from __future__ import annotations

import ctypes
import sys
import threading

JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x00002000
JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS = 9
"""JobObjectExtendedLimitInformation, of the JOBOBJECTINFOCLASS enumeration: the kill-on-close
limit needs the extended structure."""
PROCESS_TERMINATE = 0x0001
PROCESS_SET_QUOTA = 0x0100
"""The access rights AssignProcessToJobObject needs on the process handle."""


# The Win32 names, field for field, to compare with the reference pages.
class IO_COUNTERS(ctypes.Structure):
    _fields_ = [
        ("ReadOperationCount", ctypes.c_uint64),
        ("WriteOperationCount", ctypes.c_uint64),
        ("OtherOperationCount", ctypes.c_uint64),
        ("ReadTransferCount", ctypes.c_uint64),
        ("WriteTransferCount", ctypes.c_uint64),
        ("OtherTransferCount", ctypes.c_uint64),
    ]


class JOBOBJECT_BASIC_LIMIT_INFORMATION(ctypes.Structure):
    _fields_ = [
        ("PerProcessUserTimeLimit", ctypes.c_int64),  # LARGE_INTEGER
        ("PerJobUserTimeLimit", ctypes.c_int64),
        ("LimitFlags", ctypes.c_uint32),  # DWORD
        ("MinimumWorkingSetSize", ctypes.c_size_t),  # SIZE_T
        ("MaximumWorkingSetSize", ctypes.c_size_t),
        ("ActiveProcessLimit", ctypes.c_uint32),
        ("Affinity", ctypes.c_size_t),  # ULONG_PTR
        ("PriorityClass", ctypes.c_uint32),
        ("SchedulingClass", ctypes.c_uint32),
    ]


class JOBOBJECT_EXTENDED_LIMIT_INFORMATION(ctypes.Structure):
    _fields_ = [
        ("BasicLimitInformation", JOBOBJECT_BASIC_LIMIT_INFORMATION),
        ("IoInfo", IO_COUNTERS),
        ("ProcessMemoryLimit", ctypes.c_size_t),
        ("JobMemoryLimit", ctypes.c_size_t),
        ("PeakProcessMemoryUsed", ctypes.c_size_t),
        ("PeakJobMemoryUsed", ctypes.c_size_t),
    ]


def kill_on_close_limits() -> JOBOBJECT_EXTENDED_LIMIT_INFORMATION:
    """No limit but one: kill every process of the job when its last handle closes."""
    limits = JOBOBJECT_EXTENDED_LIMIT_INFORMATION()
    limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
    return limits


if sys.platform == "win32":  # pragma: no cover - cannot run here (docs/platforms.md)
    from ctypes import wintypes

    # A private WinDLL, not ctypes.windll.kernel32: the argtypes set here must not change
    # how other code in this process calls the same functions.
    _kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    _kernel32.CreateJobObjectW.argtypes = (ctypes.c_void_p, wintypes.LPCWSTR)
    _kernel32.CreateJobObjectW.restype = wintypes.HANDLE
    _kernel32.SetInformationJobObject.argtypes = (
        wintypes.HANDLE, ctypes.c_int, ctypes.c_void_p, wintypes.DWORD)
    _kernel32.SetInformationJobObject.restype = wintypes.BOOL
    _kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
    _kernel32.OpenProcess.restype = wintypes.HANDLE
    _kernel32.AssignProcessToJobObject.argtypes = (wintypes.HANDLE, wintypes.HANDLE)
    _kernel32.AssignProcessToJobObject.restype = wintypes.BOOL
    _kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
    _kernel32.CloseHandle.restype = wintypes.BOOL

    _lock = threading.Lock()
    _job: int | None = None

    def _last_error() -> OSError:
        return ctypes.WinError(ctypes.get_last_error())

    def _the_job() -> int:
        """This process's kill-on-close job, created on first use and never closed."""
        global _job
        with _lock:
            if _job is None:
                job = _kernel32.CreateJobObjectW(None, None)  # not inheritable, no name
                if not job:
                    raise _last_error()
                limits = kill_on_close_limits()
                if not _kernel32.SetInformationJobObject(
                    job,
                    JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS,
                    ctypes.byref(limits),
                    ctypes.sizeof(limits),
                ):
                    error = _last_error()
                    _kernel32.CloseHandle(job)
                    raise error
                _job = int(job)
            return _job

    def kill_with_this_process(pid: int) -> None:
        """Put process `pid` (a child this process has not reaped, so the pid is still its)
        into the job; OSError when Windows refuses."""
        process = _kernel32.OpenProcess(PROCESS_SET_QUOTA | PROCESS_TERMINATE, False, pid)
        if not process:
            raise _last_error()
        try:
            if not _kernel32.AssignProcessToJobObject(_the_job(), process):
                raise _last_error()
        finally:
            _kernel32.CloseHandle(process)
