"""Loading the Go engine (``_engine.so``) through cffi in ABI mode.

cffi rather than ctypes: a call costs a fraction of ctypes' (this is the
per-record path), ``ffi.from_buffer`` hands Go a pointer into a
``bytearray``/``memoryview`` without a copy, and cffi releases the GIL for
the duration of every call, so Go never runs with the GIL held. ABI mode
(``ffi.dlopen``) needs no C compiler at install time.

The library is loaded at the first producer, never at import, and never
unloaded: it carries a Go runtime, and a process can hold only one.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from ._errors import ForkedProcessError

CDEF = """
typedef struct {
    uint64_t id;
    int64_t offset;
    int64_t timestamp_ms;
    int32_t partition;
    int32_t kind;
    int32_t cause;
    int32_t code;
    int64_t msg_off;
    int64_t msg_len;
} kp_completion;

typedef struct {
    uint64_t id;
    char *topic;
    int64_t topic_len;
    char *key;
    int64_t key_len;
    char *val;
    int64_t val_len;
    char *hdrs;
    int64_t hdr_len;
    int64_t nhdr;
    int64_t partition;
    int64_t ts_ms;
    int64_t mode;
} kp_rec;

int32_t kp_send_many(int64_t h, kp_rec *recs, int64_t n);
int64_t kp_new(char *cfg, int64_t cfg_len, int32_t *cause, char *errbuf, int64_t errcap);
int32_t kp_fd(int64_t h);
int32_t kp_send_sync(int64_t h, char *topic, int64_t topic_len,
    char *key, int64_t key_len, char *val, int64_t val_len,
    char *hdrs, int64_t hdr_len, int32_t nhdr, int32_t partition, int64_t ts_ms,
    kp_completion *out, char *msgbuf, int64_t msgcap);
void kp_cancel(int64_t h, uint64_t id);
int64_t kp_drain(int64_t h, kp_completion *out, int64_t max, char *msgbuf, int64_t msgcap);
void kp_flush_async(int64_t h, uint64_t id, int64_t timeout_ms);
void kp_close_async(int64_t h, uint64_t id, int64_t timeout_ms);
int32_t kp_flush(int64_t h, int64_t timeout_ms, char *errbuf, int64_t errcap);
int32_t kp_close(int64_t h, int64_t timeout_ms, char *errbuf, int64_t errcap);
void kp_free(int64_t h);
int64_t kp_stats(int64_t h, char *buf, int64_t cap);
void kp_token(int64_t h, uint64_t id, char *tok, int64_t tok_len, char *err, int64_t err_len);
void kp_partitions_async(int64_t h, uint64_t id, char *topic, int64_t topic_len, int64_t timeout_ms);
int64_t kp_partitions(int64_t h, char *topic, int64_t topic_len, int64_t timeout_ms, int32_t *code, char *errbuf, int64_t errcap);
int64_t kp_dev_start(char *topic, int64_t topic_len, int32_t partitions, char *buf, int64_t cap);
void kp_dev_stop(int64_t h);
void kp_profile_stop(void);
"""

# Completion kinds and send modes (python/engine/queue.go, bridge.go).
KIND_OK = 0
KIND_NOT_WRITTEN = 1
KIND_UNKNOWN = 2
KIND_FLUSH = 3
KIND_CLOSE = 4
KIND_PARTITIONS = 5
KIND_TOKEN = 6
MODE_SEND = 0
MODE_ORDERED = 1

#: int64 fields per kp_rec (every field is 8 bytes wide).
REC_FIELDS = 13

#: On CPython, the distance from id(b) to the first byte of a bytes object
#: b (measured and checked against cffi at load; None elsewhere). Packing
#: records as int64s with this address costs a fraction of building a cffi
#: struct array with ffi.from_buffer per buffer (~5 µs per record measured).
BYTES_DATA_OFFSET: Any = None

FORK_MESSAGE = (
    "kpush: this process was forked from one that had already started the kpush "
    "engine; the Go runtime inside it does not survive fork(). Create the producer "
    "after forking (for gunicorn/uvicorn: in each worker, e.g. in a startup hook), "
    "not at import time or in the parent"
)

_lock = threading.Lock()
_ffi: Any = None
_lib: Any = None
_loaded_pid = 0
_forked = False


def _after_fork_in_child() -> None:
    global _forked
    if _lib is not None:
        _forked = True


def library_path() -> str:
    """Path of the engine library: $KPUSH_ENGINE_LIB, else the packaged one."""
    env = os.environ.get("KPUSH_ENGINE_LIB")
    if env:
        return env
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "_engine.so")


def check_fork() -> None:
    """Raise ForkedProcessError in a child forked after the engine started."""
    if _forked or (_lib is not None and os.getpid() != _loaded_pid):
        raise ForkedProcessError(FORK_MESSAGE, "forked")


def load() -> tuple[Any, Any]:
    """Return (ffi, lib), loading the engine on first use."""
    global _ffi, _lib, _loaded_pid
    check_fork()
    if _lib is not None:
        return _ffi, _lib
    with _lock:
        if _lib is None:
            import cffi

            ffi = cffi.FFI()
            ffi.cdef(CDEF)
            path = library_path()
            if not os.path.exists(path):
                raise ImportError(
                    f"kpush: engine library {path} is missing; reinstall with `pip install ./python` "
                    "(needs Go) or set KPUSH_ENGINE_LIB"
                )
            lib = ffi.dlopen(path)
            _measure_bytes_offset(ffi)
            _ffi, _loaded_pid = ffi, os.getpid()
            os.register_at_fork(after_in_child=_after_fork_in_child)
            if os.environ.get("KPUSH_ENGINE_CPUPROFILE") or os.environ.get("KPUSH_ENGINE_TRACE"):
                import atexit

                atexit.register(lambda: None if _forked else lib.kp_profile_stop())
            _lib = lib
    return _ffi, _lib


def _measure_bytes_offset(ffi: Any) -> None:
    global BYTES_DATA_OFFSET
    import sys

    if sys.implementation.name != "cpython":
        return
    samples = [b"kpush", bytes(100), b"x" * 5000, b"\x00"]
    offs = {int(ffi.cast("intptr_t", ffi.from_buffer(b))) - id(b) for b in samples}
    if len(offs) == 1:
        BYTES_DATA_OFFSET = offs.pop()


def address(ffi: Any, v: Any, keep: list) -> int:
    """The address of a buffer for a kp_rec field (0 for NULL), keeping the
    object that owns it alive in keep until the kp_send_many call returns."""
    if type(v) is bytes:
        keep.append(v)
        if BYTES_DATA_OFFSET is not None:
            return id(v) + BYTES_DATA_OFFSET
        v = ffi.from_buffer(v)
    elif v is None or v == ffi.NULL:
        return 0
    keep.append(v)
    return int(ffi.cast("intptr_t", v))


def loaded() -> bool:
    """Whether the engine has been loaded in this process."""
    return _lib is not None
