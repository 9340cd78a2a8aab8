"""A ``worker_process_setup_hook`` (tests/test_multinode.py): every Ray worker process that
installs it refuses to open a path under ``ADCS_FORBIDDEN_DIRS`` (``os.pathsep``-separated:
the driver's local disk, which on a real cluster no other node has), and appends each such
path to ``ADCS_AUDIT_LOG`` first, so a caller that swallows the error is still caught.

Python's audit hooks see opens made from Python (``open``, ``io.open``, ``os.open``, and so
``torch.load`` or ``Path.read_bytes`` of a path); pyarrow's C++ file system calls bypass them.
"""

from __future__ import annotations

import os
import sys


def install() -> None:
    roots = tuple(os.path.join(os.path.abspath(p), "") for p in os.environ.get("ADCS_FORBIDDEN_DIRS", "").split(os.pathsep)
                  if p)
    log = os.environ.get("ADCS_AUDIT_LOG")
    if not roots:
        return

    def hook(event: str, args: tuple) -> None:
        if event != "open" or not args or isinstance(args[0], int) or args[0] is None:
            return
        path = os.path.abspath(os.fsdecode(args[0]))
        if os.path.join(path, "").startswith(roots):
            if log:
                with open(log, "a") as out:  # (not under a forbidden root: no recursion)
                    out.write(f"{os.getpid()} {path}\n")
            raise PermissionError(f"a Ray worker opened {path}, on the driver's local disk")

    sys.addaudithook(hook)
