"""Loaded by a test's flowprep subprocess (this folder first on PYTHONPATH): logs every os.fsync (with the path
its descriptor names) and every rename, in order, to the file FLOWPREP_TRACE names, so tests can check what is
made durable before and after each rename, on any machine (strace is rarely installed). The calls still run."""
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
