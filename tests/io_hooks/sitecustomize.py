"""Loaded by a test's flowprep subprocess (this folder first on PYTHONPATH), for what a test cannot make a real
file system do on any machine:

- FLOWPREP_TRACE=LOG: every os.fsync (with the path its descriptor names) and every rename is logged, in order,
  to LOG, so tests can check what is made durable before and after each rename (strace is rarely installed).
- FLOWPREP_FAIL_ERRNO=NAME with FLOWPREP_FAIL_AFTER=N and FLOWPREP_FAIL_UNDER=DIR: after N files were created
  under DIR, creating another fails with that errno, as a user's quota (EDQUOT, which tmpfs cannot enforce here)
  or a dying disk would. Reads and everything else are untouched.

The calls themselves still run.
"""
import builtins
import errno
import os

_log_path = os.environ.get("FLOWPREP_TRACE")
if _log_path:
    _fsync, _rename, _replace = os.fsync, os.rename, os.replace

    def _log(line: str) -> None:
        with open(_log_path, "a") as log:
            log.write(line + "\n")

    def fsync(fd):
        fd_number = fd if isinstance(fd, int) else fd.fileno()
        _fsync(fd)
        _log(f"fsync {os.readlink(f'/proc/self/fd/{fd_number}')}")

    def rename(src, dst, **kwargs):
        _rename(src, dst, **kwargs)
        _log(f"rename {os.fspath(src)} -> {os.fspath(dst)}")

    def replace(src, dst, **kwargs):
        _replace(src, dst, **kwargs)
        _log(f"rename {os.fspath(src)} -> {os.fspath(dst)}")

    os.fsync, os.rename, os.replace = fsync, rename, replace

_fail_name = os.environ.get("FLOWPREP_FAIL_ERRNO")
if _fail_name:
    _fail_errno = getattr(errno, _fail_name)
    _under = os.path.abspath(os.environ["FLOWPREP_FAIL_UNDER"]) + os.sep
    _left = [int(os.environ["FLOWPREP_FAIL_AFTER"])]
    _open, _os_open = builtins.open, os.open

    def _creating(path) -> None:
        if isinstance(path, int) or not os.path.abspath(os.fspath(path)).startswith(_under):
            return
        if _left[0] <= 0:
            raise OSError(_fail_errno, os.strerror(_fail_errno), os.fspath(path))
        _left[0] -= 1

    def open(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+"):
            _creating(file)
        return _open(file, mode, *args, **kwargs)

    def os_open(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            _creating(path)
        return _os_open(path, flags, *args, **kwargs)

    builtins.open, os.open = open, os_open
