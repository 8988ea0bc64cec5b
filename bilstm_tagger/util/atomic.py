"""Crash-safe writes: the one place the package puts a file or a directory in place via a temp and a rename.

Files: write a temp file beside the target, fsync it, rename it over the target (atomic on POSIX), fsync
the directory (`commit`). `atomic_write`, `write_json_atomic` and `write_jsonl_atomic` do all of it;
callers whose writer wants a path (pyarrow, DocBin) write to `tmp_name(final)` and call `commit`.

Directories: build the new one at `tmp_name(target)`, then `replace_dir` swaps it in: one
renameat2(RENAME_EXCHANGE) on Linux, else two renames (a moment with no target, never a partial one);
`recover_dir_swaps` undoes what a kill between those two renames leaves. `write_dir_atomic` does all of it.

Every temp name is hidden (leading ".") and carries TMP_MARK, so a clean-up can find the leftovers of a kill.
Tests patch `_exchange` here (the crash-safe save tests switch renameat2 off, or count its calls).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Union

TMP_MARK = ".tmp-"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100

PathLike = Union[str, Path]


# -- files ---------------------------------------------------------------------------------------
def tmp_name(final: PathLike) -> Path:
    """The temp path beside `final` that this process writes before `commit`: .NAME.tmp-PID."""
    final = Path(final)
    return final.with_name(f".{final.name}{TMP_MARK}{os.getpid()}")


def fsync_dir(path: PathLike) -> None:
    """fsync a directory, so that a rename in it survives a power loss; a no-op where the system can't."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit(tmp: PathLike, final: PathLike, durable: bool = True) -> None:
    """fsync tmp, rename it to final (atomic on POSIX), fsync the directory.

    durable=False skips both fsyncs: still never a half-written file for a reader, but a power loss may
    lose the write (for figures rewritten often, like the benchmark's per-process stats).
    """
    tmp, final = Path(tmp), Path(final)
    if durable:
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
    os.replace(tmp, final)
    if durable:
        fsync_dir(final.parent)


def atomic_write(path: PathLike, data: bytes, durable: bool = True) -> None:
    """Write via a temp file and rename, so a crash never leaves a half-written file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TMP_MARK}")
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        commit(tmp, path, durable)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: PathLike, data: Any) -> None:
    """`data` as indented JSON with sorted keys, atomically."""
    atomic_write(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf8"))


def write_jsonl_atomic(path: PathLike, rows: Iterable[dict]) -> None:
    """One JSON object per line, streamed to the temp file, atomically; creates the parent directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    try:
        with open(tmp, "w", encoding="utf8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# -- directories ---------------------------------------------------------------------------------
def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where the system can't."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name or not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    return renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


def _old_name(target: Path) -> Path:
    """Where the two-rename fallback parks the previous target: .NAME.tmp-old-PID."""
    return target.with_name(f".{target.name}{TMP_MARK}old-{os.getpid()}")


def replace_dir(new: PathLike, target: PathLike) -> None:
    """Put the finished directory `new` at `target`, never leaving `target` half-written."""
    new, target = Path(new), Path(target)
    if not target.exists():
        os.rename(new, target)
        fsync_dir(target.parent)
        return
    if _exchange(new, target):
        fsync_dir(target.parent)
        shutil.rmtree(new)  # `new` now holds the old contents
        return
    old = _old_name(target)
    os.rename(target, old)  # without renameat2: a moment with no target, never a partial one
    os.rename(new, target)
    fsync_dir(target.parent)
    shutil.rmtree(old)


def write_dir_atomic(target: PathLike, fill: Callable[[Path], None]) -> None:
    """Build a directory with fill(tmp) at tmp = tmp_name(target), then swap it in with replace_dir.

    fill gets a path that does not exist (a leftover of an earlier attempt by this pid is removed first).
    """
    target = Path(target)
    tmp = tmp_name(target)
    if tmp.exists():
        shutil.rmtree(tmp)
    fill(tmp)
    replace_dir(tmp, target)


def recover_dir_swaps(parent: PathLike, pattern: str = "*") -> None:
    """Clean up after a process killed inside write_dir_atomic, for the targets in `parent` matching `pattern`.

    Without renameat2 a kill between the two renames of `replace_dir` leaves the previous directory only
    at `.NAME.tmp-old-PID`: it is moved back, not deleted. Every other temp dir is deleted.
    """
    parent = Path(parent)
    for old in parent.glob(f".{pattern}{TMP_MARK}old-*"):
        target = parent / old.name[1:].split(TMP_MARK)[0]
        if not target.exists():
            os.rename(old, target)
    for path in parent.glob(f".{pattern}{TMP_MARK}*"):
        shutil.rmtree(path, ignore_errors=True)
