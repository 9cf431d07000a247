/* kpush._speedups: the per-record Python work of the asyncio producer, in C.
 *
 * One Fast object per Core (kpush/_core.py), used only on that core's event
 * loop thread with the GIL held. It never calls into Go: the foreign calls
 * (kp_send_many, kp_drain) stay in _core.py, once per loop iteration and
 * once per 4096 completions. What it does per record:
 *   - send(): the fast path of Producer.send/send_nowait (bytes value, bytes
 *     or None key, str topic already seen, no headers/partition/timestamp):
 *     packs the record's kp_rec (13 int64s, pointers into the bytes
 *     objects, which stay referenced in `keep` until take() hands them to
 *     the caller of kp_send_many), creates its future and registers it in
 *     `futures` as (future, topic).
 *   - resolve(): reads the kp_completion array kp_drain filled and resolves
 *     the futures of successful records (RecordMetadata), stopping at the
 *     first completion of another kind, which _core.py handles in Python.
 * SendFuture (the future an awaited send() waits on) is in _sendfuture.c.
 * kpush/_fast.py is the pure-Python twin with the same interface, used when
 * this extension was not built (CI builds it and fails without it).
 */
#include "_speedups.h"
#include <stdint.h>
#include <string.h>

#define REC_FIELDS 13
#define COMPLETION_SIZE 56 /* kp_completion: u64, i64, i64, 4 x i32, i64, i64 */


typedef struct {
    PyObject_HEAD
    int64_t *buf;            /* n records of REC_FIELDS int64s */
    Py_ssize_t n, cap;
    PyObject *keep;          /* list: owners of the buffers buf points into */
    PyObject *futures;       /* dict: id -> (future, topic), shared with Core */
    PyObject *topics;        /* dict: topic str -> its UTF-8 bytes, shared with Core */
    PyObject *new_future;    /* callable() -> future of the loop */
    PyObject *schedule;      /* callable(), called when a tick's first record arrives */
    PyObject *md_type;       /* RecordMetadata */
    PyObject *loop;          /* the core's event loop */
    PyObject *running_loop;  /* asyncio._get_running_loop, or NULL: compare loop._thread_id */
    PyObject *fatal;         /* a BaseException from a callback resolve() ran, for pop_error() */
    uint64_t seq;            /* last id given out */
} Fast;

static PyObject *str_done, *str_set_result, *str_thread_id;

static int Fast_traverse(Fast *self, visitproc visit, void *arg) {
    Py_VISIT(self->keep);
    Py_VISIT(self->futures);
    Py_VISIT(self->topics);
    Py_VISIT(self->new_future);
    Py_VISIT(self->schedule);
    Py_VISIT(self->md_type);
    Py_VISIT(self->loop);
    Py_VISIT(self->running_loop);
    Py_VISIT(self->fatal);
    return 0;
}

static int Fast_clear(Fast *self) {
    Py_CLEAR(self->keep);
    Py_CLEAR(self->futures);
    Py_CLEAR(self->topics);
    Py_CLEAR(self->new_future);
    Py_CLEAR(self->schedule);
    Py_CLEAR(self->md_type);
    Py_CLEAR(self->loop);
    Py_CLEAR(self->running_loop);
    Py_CLEAR(self->fatal);
    return 0;
}

static void Fast_dealloc(Fast *self) {
    PyObject_GC_UnTrack(self);
    Fast_clear(self);
    PyMem_Free(self->buf);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Fast_init(Fast *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"futures", "topics", "new_future", "schedule", "md_type", "loop", "running_loop", NULL};
    PyObject *futures, *topics, *new_future, *schedule, *md_type, *loop, *running_loop;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!OOO!OO", kwlist, &PyDict_Type, &futures, &PyDict_Type,
                                     &topics, &new_future, &schedule, &PyType_Type, &md_type, &loop, &running_loop))
        return -1;
    Py_XSETREF(self->loop, Py_NewRef(loop));
    Py_CLEAR(self->running_loop);
    if (running_loop != Py_None)
        self->running_loop = Py_NewRef(running_loop);
    PyObject *keep = PyList_New(0);
    if (keep == NULL)
        return -1;
    Py_XSETREF(self->keep, keep);
    Py_XSETREF(self->futures, Py_NewRef(futures));
    Py_XSETREF(self->topics, Py_NewRef(topics));
    Py_XSETREF(self->new_future, Py_NewRef(new_future));
    Py_XSETREF(self->schedule, Py_NewRef(schedule));
    Py_XSETREF(self->md_type, Py_NewRef(md_type));
    return 0;
}

/* Appends one record's fields; calls schedule when it is the tick's first. */
static int append(Fast *self, const int64_t *fields) {
    if (self->n == self->cap) {
        Py_ssize_t cap = self->cap ? self->cap * 2 : 256;
        int64_t *b = PyMem_Realloc(self->buf, (size_t)cap * REC_FIELDS * sizeof(int64_t));
        if (b == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->buf = b;
        self->cap = cap;
    }
    memcpy(self->buf + self->n * REC_FIELDS, fields, REC_FIELDS * sizeof(int64_t));
    self->n++;
    if (self->n == 1) {
        PyObject *r = PyObject_CallNoArgs(self->schedule);
        if (r == NULL) {
            self->n--; /* not buffered: the caller reports the error */
            return -1;
        }
        Py_DECREF(r);
    }
    return 0;
}

/* Registers fut for id under (fut, topic). */
static int register_future(Fast *self, uint64_t id, PyObject *fut, PyObject *topic) {
    PyObject *entry = PyTuple_Pack(2, fut, topic);
    if (entry == NULL)
        return -1;
    PyObject *k = PyLong_FromUnsignedLongLong(id);
    if (k == NULL) {
        Py_DECREF(entry);
        return -1;
    }
    int rc = PyDict_SetItem(self->futures, k, entry);
    Py_DECREF(k);
    Py_DECREF(entry);
    return rc;
}

/* Whether the caller runs on the thread running self->loop: 1, 0, or -1
 * (error). asyncio's _get_running_loop calls getpid() on every call before
 * Python 3.12 (13 % of the loop thread's samples at C=10,000); a
 * BaseEventLoop records the thread running it in _thread_id, and a thread
 * runs one loop at a time, so comparing it is the same check. */
static int on_loop_thread(Fast *self) {
    if (self->running_loop != NULL) {
        PyObject *rl = PyObject_CallNoArgs(self->running_loop);
        if (rl == NULL)
            return -1;
        Py_DECREF(rl);
        return rl == self->loop;
    }
    PyObject *tid = PyObject_GetAttr(self->loop, str_thread_id);
    if (tid == NULL)
        return -1;
    int same = 0;
    if (tid != Py_None) {
        unsigned long v = PyLong_AsUnsignedLong(tid);
        if (v == (unsigned long)-1 && PyErr_Occurred()) {
            Py_DECREF(tid);
            return -1;
        }
        same = v == PyThread_get_thread_ident();
    }
    Py_DECREF(tid);
    return same;
}

PyDoc_STRVAR(Fast_send_doc,
             "send(mode, topic, value, key, headers, partition, timestamp_ms) -> future or None\n\n"
             "Buffer one record on the fast path and return its future; None (nothing done) when the\n"
             "record needs the general path (kpush/aio.py: Producer._start).");

static PyObject *Fast_send(Fast *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "send() takes 7 arguments");
        return NULL;
    }
    PyObject *topic = args[1], *value = args[2], *key = args[3];
    if (!PyBytes_CheckExact(value) || args[4] != Py_None || args[5] != Py_None || args[6] != Py_None ||
        !(key == Py_None || PyBytes_CheckExact(key)) || !PyUnicode_CheckExact(topic))
        Py_RETURN_NONE;
    PyObject *tb = PyDict_GetItemWithError(self->topics, topic); /* borrowed */
    if (tb == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE; /* first record of this topic: the general path checks and caches it */
    }
    if (!PyBytes_CheckExact(tb))
        Py_RETURN_NONE;
    int64_t mode = PyLong_AsLongLong(args[0]);
    if (mode == -1 && PyErr_Occurred())
        return NULL;
    int on_loop = on_loop_thread(self);
    if (on_loop <= 0)
        return on_loop < 0 ? NULL : Py_NewRef(Py_None); /* the general path raises WrongLoopError */
    uint64_t id = self->seq + 1;
    PyObject *fut;
    if (mode == 0) {
        /* await send(): a SendFuture, which is its own futures entry */
        fut = (PyObject *)sf_new(self->loop, topic);
        if (fut == NULL)
            return NULL;
        PyObject *k = PyLong_FromUnsignedLongLong(id);
        int rc = k == NULL ? -1 : PyDict_SetItem(self->futures, k, fut);
        Py_XDECREF(k);
        if (rc < 0)
            goto fail;
    } else {
        /* send_nowait(): an asyncio future, entry (future, topic) */
        fut = PyObject_CallNoArgs(self->new_future);
        if (fut == NULL)
            return NULL;
        if (register_future(self, id, fut, topic) < 0)
            goto fail;
    }
    if (PyList_Append(self->keep, value) < 0 || (key != Py_None && PyList_Append(self->keep, key) < 0))
        goto unregister;
    self->seq = id;
    int64_t f[REC_FIELDS] = {
        (int64_t)id,
        (int64_t)(intptr_t)PyBytes_AS_STRING(tb),
        (int64_t)PyBytes_GET_SIZE(tb),
        key == Py_None ? 0 : (int64_t)(intptr_t)PyBytes_AS_STRING(key),
        key == Py_None ? -1 : (int64_t)PyBytes_GET_SIZE(key),
        (int64_t)(intptr_t)PyBytes_AS_STRING(value),
        (int64_t)PyBytes_GET_SIZE(value),
        0, 0, 0, -1, -1, mode,
    };
    if (append(self, f) < 0)
        goto unregister;
    return fut;
unregister : {
    PyObject *k = PyLong_FromUnsignedLongLong(id);
    if (k != NULL) {
        PyObject *t, *v, *tb;
        PyErr_Fetch(&t, &v, &tb);
        if (PyDict_DelItem(self->futures, k) < 0)
            PyErr_Clear();
        PyErr_Restore(t, v, tb);
        Py_DECREF(k);
    }
}
fail:
    Py_DECREF(fut);
    return NULL;
}

PyDoc_STRVAR(Fast_push_doc,
             "push(fields, owners)\n\n"
             "Buffer one record packed by the general path: fields is a buffer of 13 int64s (a kp_rec),\n"
             "owners the objects its pointers point into (kept until take()).");

static PyObject *Fast_push(Fast *self, PyObject *args) {
    Py_buffer view;
    PyObject *owners;
    if (!PyArg_ParseTuple(args, "y*O!", &view, &PyList_Type, &owners))
        return NULL;
    if (view.len != REC_FIELDS * (Py_ssize_t)sizeof(int64_t)) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "push() needs exactly one kp_rec (13 int64s)");
        return NULL;
    }
    int64_t f[REC_FIELDS];
    memcpy(f, view.buf, sizeof f);
    PyBuffer_Release(&view);
    Py_ssize_t end = PyList_GET_SIZE(self->keep);
    if (PyList_SetSlice(self->keep, end, end, owners) < 0)
        return NULL;
    if ((uint64_t)f[0] > self->seq)
        self->seq = (uint64_t)f[0];
    if (append(self, f) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(Fast_take_doc,
             "take() -> (records, n, owners) or None\n\n"
             "The buffered records as bytes (n kp_recs) and the objects they point into; empties the\n"
             "buffer. The caller keeps owners alive until kp_send_many has returned.");

static PyObject *Fast_take(Fast *self, PyObject *unused) {
    if (self->n == 0)
        Py_RETURN_NONE;
    PyObject *recs = PyBytes_FromStringAndSize((const char *)self->buf, self->n * REC_FIELDS * (Py_ssize_t)sizeof(int64_t));
    if (recs == NULL)
        return NULL;
    PyObject *keep = PyList_New(0);
    if (keep == NULL) {
        Py_DECREF(recs);
        return NULL;
    }
    PyObject *owners = self->keep;
    self->keep = keep;
    Py_ssize_t n = self->n;
    self->n = 0;
    PyObject *r = Py_BuildValue("(NnN)", recs, n, owners);
    return r;
}

PyDoc_STRVAR(Fast_next_id_doc, "next_id() -> int\n\nA fresh id for a record or a control request.");

static PyObject *Fast_next_id(Fast *self, PyObject *unused) {
    self->seq++;
    return PyLong_FromUnsignedLongLong(self->seq);
}

/* RecordMetadata(topic, partition, offset, ts), through tuple.__new__: a
 * namedtuple's own __new__ is a Python frame. */
static PyObject *make_md(Fast *self, PyObject *topic, int32_t partition, int64_t offset, int64_t ts) {
    PyObject *md = NULL, *fields = Py_BuildValue("(OiLL)", topic, (int)partition, (long long)offset, (long long)ts);
    if (fields != NULL) {
        PyObject *a = PyTuple_Pack(1, fields);
        if (a != NULL) {
            md = PyTuple_Type.tp_new((PyTypeObject *)self->md_type, a, NULL);
            Py_DECREF(a);
        }
        Py_DECREF(fields);
    }
    return md;
}

PyDoc_STRVAR(Fast_pop_error_doc,
             "pop_error() -> BaseException or None\n\n"
             "A KeyboardInterrupt/SystemExit raised by a callback resolve() ran (the first one), to be\n"
             "raised by the caller once the batch is resolved; Exceptions went to the loop's handler.");

static PyObject *Fast_pop_error(Fast *self, PyObject *unused) {
    PyObject *e = self->fatal;
    self->fatal = NULL;
    return e ? e : Py_NewRef(Py_None);
}

PyDoc_STRVAR(Fast_resolve_doc,
             "resolve(address, n, start) -> int\n\n"
             "Resolve the futures of the successful records among the n kp_completions at address,\n"
             "from index start; return the index of the first completion of another kind (or n).");

static PyObject *Fast_resolve(Fast *self, PyObject *args) {
    unsigned long long addr;
    Py_ssize_t n, i;
    if (!PyArg_ParseTuple(args, "Knn", &addr, &n, &i))
        return NULL;
    const char *base = (const char *)(uintptr_t)addr;
    /* Called from inside a task (not the loop's reader), a wake-up run now
     * could not enter its task and would strand it: schedule them instead. */
    int direct = -2;
    for (; i < n; i++) {
        const char *c = base + i * COMPLETION_SIZE;
        uint64_t id;
        int64_t offset, ts;
        int32_t partition, kind;
        memcpy(&id, c, 8);
        memcpy(&offset, c + 8, 8);
        memcpy(&ts, c + 16, 8);
        memcpy(&partition, c + 24, 4);
        memcpy(&kind, c + 28, 4);
        if (kind != 0)
            break;
        PyObject *k = PyLong_FromUnsignedLongLong(id);
        if (k == NULL)
            return NULL;
        PyObject *entry = PyDict_GetItemWithError(self->futures, k);
        if (entry == NULL) {
            Py_DECREF(k);
            if (PyErr_Occurred())
                return NULL;
            continue; /* a control request's id, or already failed by close */
        }
        if (Py_IS_TYPE(entry, &SendFutureType)) {
            Py_INCREF(entry);
            int rc = PyDict_DelItem(self->futures, k);
            Py_DECREF(k);
            SendFuture *f = (SendFuture *)entry;
            if (rc == 0 && f->state == SF_PENDING) {
                if (direct == -2 && (direct = sf_no_task_running(self->loop)) < 0) {
                    PyErr_WriteUnraisable(entry);
                    direct = 0;
                }
                PyObject *md = make_md(self, f->topic, partition, offset, ts);
                if (md == NULL)
                    PyErr_WriteUnraisable(entry);
                else
                    sf_resolve_now(f, md, &self->fatal, direct); /* runs the awaiting task's step now */
            }
            Py_DECREF(entry);
            if (rc < 0)
                return NULL;
            continue;
        }
        if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 2) {
            Py_DECREF(k);
            break; /* not ours: the general path decides */
        }
        Py_INCREF(entry);
        int rc = PyDict_DelItem(self->futures, k);
        Py_DECREF(k);
        if (rc < 0) {
            Py_DECREF(entry);
            return NULL;
        }
        PyObject *fut = PyTuple_GET_ITEM(entry, 0), *topic = PyTuple_GET_ITEM(entry, 1);
        PyObject *done = PyObject_CallMethodNoArgs(fut, str_done);
        int is_done = done == NULL ? -1 : PyObject_IsTrue(done);
        Py_XDECREF(done);
        if (is_done == 0) {
            PyObject *md = make_md(self, topic, partition, offset, ts);
            PyObject *r = md == NULL ? NULL : PyObject_CallMethodOneArg(fut, str_set_result, md);
            Py_XDECREF(md);
            if (r == NULL)
                is_done = -1;
            Py_XDECREF(r);
        }
        Py_DECREF(entry);
        if (is_done < 0)
            /* Never strand the rest of the batch: report and go on. */
            PyErr_WriteUnraisable((PyObject *)self);
    }
    return PyLong_FromSsize_t(i);
}

static Py_ssize_t Fast_len(Fast *self) { return self->n; }

static PyObject *Fast_get_seq(Fast *self, void *closure) { return PyLong_FromUnsignedLongLong(self->seq); }

static PyMethodDef Fast_methods[] = {
    {"send", (PyCFunction)(void (*)(void))Fast_send, METH_FASTCALL, Fast_send_doc},
    {"push", (PyCFunction)Fast_push, METH_VARARGS, Fast_push_doc},
    {"take", (PyCFunction)Fast_take, METH_NOARGS, Fast_take_doc},
    {"next_id", (PyCFunction)Fast_next_id, METH_NOARGS, Fast_next_id_doc},
    {"resolve", (PyCFunction)Fast_resolve, METH_VARARGS, Fast_resolve_doc},
    {"pop_error", (PyCFunction)Fast_pop_error, METH_NOARGS, Fast_pop_error_doc},
    {NULL},
};

static PyGetSetDef Fast_getset[] = {
    {"seq", (getter)Fast_get_seq, NULL, "the last id given out", NULL},
    {NULL},
};

static PySequenceMethods Fast_as_sequence = {.sq_length = (lenfunc)Fast_len};

static PyTypeObject FastType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "kpush._speedups.Fast",
    .tp_doc = PyDoc_STR("Fast(futures, topics, new_future, schedule, md_type): the per-record path of one Core"),
    .tp_basicsize = sizeof(Fast),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Fast_init,
    .tp_dealloc = (destructor)Fast_dealloc,
    .tp_traverse = (traverseproc)Fast_traverse,
    .tp_clear = (inquiry)Fast_clear,
    .tp_methods = Fast_methods,
    .tp_getset = Fast_getset,
    .tp_as_sequence = &Fast_as_sequence,
};

/* Multi-phase init, main interpreter only: the types and names are static
 * (one copy per process), so a subinterpreter would get the main one's
 * CancelledError; it gets ImportError and kpush/_fast.py's Python twin. */
static int speedups_exec(PyObject *m) {
    if (PyInterpreterState_Get() != PyInterpreterState_Main()) {
        PyErr_SetString(PyExc_ImportError, "kpush._speedups works only in the main interpreter");
        return -1;
    }
    if (PyType_Ready(&FastType) < 0 || sf_module_init() < 0)
        return -1;
    if (str_done == NULL) {
        str_done = PyUnicode_InternFromString("done");
        str_set_result = PyUnicode_InternFromString("set_result");
        str_thread_id = PyUnicode_InternFromString("_thread_id");
        if (str_done == NULL || str_set_result == NULL || str_thread_id == NULL)
            return -1;
    }
    Py_INCREF(&FastType);
    if (PyModule_AddObject(m, "Fast", (PyObject *)&FastType) < 0) {
        Py_DECREF(&FastType);
        return -1;
    }
    Py_INCREF(&SendFutureType);
    if (PyModule_AddObject(m, "SendFuture", (PyObject *)&SendFutureType) < 0) {
        Py_DECREF(&SendFutureType);
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot speedups_slots[] = {
    {Py_mod_exec, speedups_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
#if PY_VERSION_HEX >= 0x030D0000
    {Py_mod_gil, Py_MOD_GIL_USED}, /* it relies on the GIL throughout */
#endif
    {0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "kpush._speedups",
    .m_doc = "kpush's per-record asyncio path in C (see kpush/_fast.py).",
    .m_size = 0,
    .m_slots = speedups_slots,
};

PyMODINIT_FUNC PyInit__speedups(void) { return PyModuleDef_Init(&module); }
