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
 * kpush/_fast.py is the pure-Python twin with the same interface, used when
 * this extension was not built (CI builds it and fails without it).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define REC_FIELDS 13
#define COMPLETION_SIZE 56 /* kp_completion: u64, i64, i64, 4 x i32, i64, i64 */

/* SendFuture: the future of one `await producer.send(...)` record.
 *
 * asyncio's Task awaits any object with the Future protocol
 * (_asyncio_future_blocking, get_loop, add_done_callback, result, cancel,
 * ...). A SendFuture has that protocol, so a task awaiting send() waits on
 * it as on an asyncio.Future; the difference is how Fast.resolve() (the
 * loop's pipe reader, outside any task) completes it: it runs the done
 * callbacks, the awaiting task's wake-up, at once, in their contexts,
 * instead of scheduling one loop.call_soon Handle per record, which was the
 * largest cost left in the profile. Everywhere else (set_result,
 * set_exception, cancel from Python) callbacks are scheduled with
 * loop.call_soon, exactly as asyncio.Future does.
 */
enum { SF_PENDING, SF_DONE, SF_CANCELLED };

typedef struct {
    PyObject_HEAD
    PyObject *loop;
    PyObject *topic;
    PyObject *result;
    PyObject *exception;
    PyObject *cancel_msg;
    PyObject *cb;        /* the first done callback (the awaiting task's wake-up) */
    PyObject *cb_ctx;    /* its context, or NULL */
    PyObject *callbacks; /* list of (fn, context) for further ones, or NULL */
    int state;
    int blocking;
} SendFuture;

static PyTypeObject SendFutureType;
static PyObject *CancelledError, *InvalidStateError;
static PyObject *str_call_soon, *str_context, *str_call_exception_handler;

static int SF_traverse(SendFuture *f, visitproc visit, void *arg) {
    Py_VISIT(f->loop);
    Py_VISIT(f->topic);
    Py_VISIT(f->result);
    Py_VISIT(f->exception);
    Py_VISIT(f->cancel_msg);
    Py_VISIT(f->cb);
    Py_VISIT(f->cb_ctx);
    Py_VISIT(f->callbacks);
    return 0;
}

static int SF_clear(SendFuture *f) {
    Py_CLEAR(f->loop);
    Py_CLEAR(f->topic);
    Py_CLEAR(f->result);
    Py_CLEAR(f->exception);
    Py_CLEAR(f->cancel_msg);
    Py_CLEAR(f->cb);
    Py_CLEAR(f->cb_ctx);
    Py_CLEAR(f->callbacks);
    return 0;
}

static void SF_dealloc(SendFuture *f) {
    PyObject_GC_UnTrack(f);
    SF_clear(f);
    Py_TYPE(f)->tp_free((PyObject *)f);
}

static SendFuture *sf_new(PyObject *loop, PyObject *topic) {
    SendFuture *f = PyObject_GC_New(SendFuture, &SendFutureType);
    if (f == NULL)
        return NULL;
    f->loop = Py_NewRef(loop);
    f->topic = Py_NewRef(topic);
    f->result = f->exception = f->cancel_msg = f->cb = f->cb_ctx = f->callbacks = NULL;
    f->state = SF_PENDING;
    f->blocking = 0;
    PyObject_GC_Track(f);
    return f;
}

/* Takes the callbacks out of f: (fn, ctx) pairs in registration order. */
static PyObject *sf_take_callbacks(SendFuture *f) {
    Py_ssize_t extra = f->callbacks ? PyList_GET_SIZE(f->callbacks) : 0;
    PyObject *all = PyList_New(0);
    if (all == NULL)
        return NULL;
    if (f->cb != NULL) {
        PyObject *pair = PyTuple_Pack(2, f->cb, f->cb_ctx ? f->cb_ctx : Py_None);
        if (pair == NULL || PyList_Append(all, pair) < 0) {
            Py_XDECREF(pair);
            Py_DECREF(all);
            return NULL;
        }
        Py_DECREF(pair);
        Py_CLEAR(f->cb);
        Py_CLEAR(f->cb_ctx);
    }
    for (Py_ssize_t i = 0; i < extra; i++)
        if (PyList_Append(all, PyList_GET_ITEM(f->callbacks, i)) < 0) {
            Py_DECREF(all);
            return NULL;
        }
    Py_CLEAR(f->callbacks);
    return all;
}

/* Schedules every callback with loop.call_soon(fn, f, context=ctx). */
static int sf_schedule_callbacks(SendFuture *f) {
    if (f->cb == NULL && f->callbacks == NULL)
        return 0;
    PyObject *all = sf_take_callbacks(f);
    if (all == NULL)
        return -1;
    PyObject *call_soon = PyObject_GetAttr(f->loop, str_call_soon);
    if (call_soon == NULL) {
        Py_DECREF(all);
        return -1;
    }
    PyObject *kwnames = PyTuple_Pack(1, str_context);
    int rc = kwnames == NULL ? -1 : 0;
    for (Py_ssize_t i = 0; rc == 0 && i < PyList_GET_SIZE(all); i++) {
        PyObject *pair = PyList_GET_ITEM(all, i);
        PyObject *ctx = PyTuple_GET_ITEM(pair, 1);
        PyObject *stack[3] = {PyTuple_GET_ITEM(pair, 0), (PyObject *)f, ctx};
        PyObject *r = ctx == Py_None ? PyObject_Vectorcall(call_soon, stack, 2, NULL)
                                     : PyObject_Vectorcall(call_soon, stack, 2, kwnames);
        if (r == NULL)
            rc = -1;
        Py_XDECREF(r);
    }
    Py_XDECREF(kwnames);
    Py_DECREF(call_soon);
    Py_DECREF(all);
    return rc;
}

/* Runs fn(f) in ctx now (as Handle._run would): an Exception goes to the
 * loop's exception handler; a BaseException (KeyboardInterrupt, SystemExit)
 * is stored in *fatal (the first one) for the caller to raise later. */
static void sf_run(SendFuture *f, PyObject *fn, PyObject *ctx, PyObject **fatal) {
    PyObject *r;
    if (ctx != NULL && ctx != Py_None) {
        if (PyContext_Enter(ctx) < 0) {
            r = NULL;
        } else {
            r = PyObject_CallOneArg(fn, (PyObject *)f);
            PyObject *t, *v, *tb;
            PyErr_Fetch(&t, &v, &tb);
            if (PyContext_Exit(ctx) < 0)
                PyErr_Clear();
            PyErr_Restore(t, v, tb);
        }
    } else {
        r = PyObject_CallOneArg(fn, (PyObject *)f);
    }
    if (r != NULL) {
        Py_DECREF(r);
        return;
    }
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb != NULL && v != NULL)
        PyException_SetTraceback(v, tb);
    if (v != NULL && !PyObject_TypeCheck(v, (PyTypeObject *)PyExc_Exception)) {
        if (*fatal == NULL)
            *fatal = Py_NewRef(v);
    } else if (v != NULL) {
        PyObject *d = Py_BuildValue("{s:s,s:O,s:O}", "message", "Exception in callback of a kpush send future", "exception", v,
                                    "future", (PyObject *)f);
        PyObject *rr = d == NULL ? NULL : PyObject_CallMethodOneArg(f->loop, str_call_exception_handler, d);
        Py_XDECREF(d);
        if (rr == NULL)
            PyErr_WriteUnraisable((PyObject *)f);
        Py_XDECREF(rr);
    }
    Py_XDECREF(t);
    Py_XDECREF(v);
    Py_XDECREF(tb);
}

/* Completes f with result (stolen) and runs its callbacks now. */
static void sf_resolve_now(SendFuture *f, PyObject *result, PyObject **fatal) {
    f->result = result;
    f->state = SF_DONE;
    if (f->cb != NULL && f->callbacks == NULL) { /* the usual case: only the task's wake-up */
        PyObject *fn = f->cb, *ctx = f->cb_ctx;
        f->cb = f->cb_ctx = NULL;
        sf_run(f, fn, ctx, fatal);
        Py_DECREF(fn);
        Py_XDECREF(ctx);
        return;
    }
    PyObject *all = sf_take_callbacks(f);
    if (all == NULL) {
        PyErr_WriteUnraisable((PyObject *)f);
        return;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(all); i++) {
        PyObject *pair = PyList_GET_ITEM(all, i);
        sf_run(f, PyTuple_GET_ITEM(pair, 0), PyTuple_GET_ITEM(pair, 1), fatal);
    }
    Py_DECREF(all);
}

static PyObject *invalid_state(const char *msg) {
    PyErr_SetString(InvalidStateError, msg);
    return NULL;
}

static PyObject *SF_done(SendFuture *f, PyObject *unused) { return PyBool_FromLong(f->state != SF_PENDING); }

static PyObject *SF_cancelled(SendFuture *f, PyObject *unused) { return PyBool_FromLong(f->state == SF_CANCELLED); }

static PyObject *sf_cancelled_error(SendFuture *f) {
    if (f->cancel_msg != NULL && f->cancel_msg != Py_None)
        PyErr_SetObject(CancelledError, f->cancel_msg);
    else
        PyErr_SetNone(CancelledError);
    return NULL;
}

static PyObject *SF_result(SendFuture *f, PyObject *unused) {
    if (f->state == SF_CANCELLED)
        return sf_cancelled_error(f);
    if (f->state == SF_PENDING)
        return invalid_state("Result is not ready.");
    if (f->exception != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(f->exception), f->exception);
        return NULL;
    }
    return Py_NewRef(f->result);
}

static PyObject *SF_exception(SendFuture *f, PyObject *unused) {
    if (f->state == SF_CANCELLED)
        return sf_cancelled_error(f);
    if (f->state == SF_PENDING)
        return invalid_state("Exception is not set.");
    return Py_NewRef(f->exception ? f->exception : Py_None);
}

static PyObject *SF_set_result(SendFuture *f, PyObject *v) {
    if (f->state != SF_PENDING)
        return invalid_state("invalid state");
    f->result = Py_NewRef(v);
    f->state = SF_DONE;
    if (sf_schedule_callbacks(f) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *SF_set_exception(SendFuture *f, PyObject *e) {
    if (f->state != SF_PENDING)
        return invalid_state("invalid state");
    if (PyType_Check(e)) {
        e = PyObject_CallNoArgs(e);
        if (e == NULL)
            return NULL;
    } else {
        Py_INCREF(e);
    }
    if (!PyExceptionInstance_Check(e)) {
        Py_DECREF(e);
        PyErr_SetString(PyExc_TypeError, "invalid exception object");
        return NULL;
    }
    f->exception = e;
    f->state = SF_DONE;
    if (sf_schedule_callbacks(f) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *SF_cancel(SendFuture *f, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *msg = nargs > 0 ? args[0] : Py_None;
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) == 1 && nargs == 0)
        msg = args[0];
    if (f->state != SF_PENDING)
        Py_RETURN_FALSE;
    f->state = SF_CANCELLED;
    Py_XSETREF(f->cancel_msg, Py_NewRef(msg));
    if (sf_schedule_callbacks(f) < 0)
        return NULL;
    Py_RETURN_TRUE;
}

static PyObject *SF_add_done_callback(SendFuture *f, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs != 1 || nkw > 1) {
        PyErr_SetString(PyExc_TypeError, "add_done_callback(fn, *, context=None)");
        return NULL;
    }
    PyObject *fn = args[0], *ctx = nkw ? args[1] : Py_None;
    if (f->state != SF_PENDING) {
        PyObject *call_soon = PyObject_GetAttr(f->loop, str_call_soon);
        if (call_soon == NULL)
            return NULL;
        PyObject *kwn = PyTuple_Pack(1, str_context);
        PyObject *stack[3] = {fn, (PyObject *)f, ctx};
        PyObject *r = kwn == NULL ? NULL : PyObject_Vectorcall(call_soon, stack, 2, ctx == Py_None ? NULL : kwn);
        Py_XDECREF(kwn);
        Py_DECREF(call_soon);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
        Py_RETURN_NONE;
    }
    if (f->cb == NULL && f->callbacks == NULL) {
        f->cb = Py_NewRef(fn);
        f->cb_ctx = ctx == Py_None ? NULL : Py_NewRef(ctx);
        Py_RETURN_NONE;
    }
    if (f->callbacks == NULL && (f->callbacks = PyList_New(0)) == NULL)
        return NULL;
    PyObject *pair = PyTuple_Pack(2, fn, ctx);
    if (pair == NULL)
        return NULL;
    int rc = PyList_Append(f->callbacks, pair);
    Py_DECREF(pair);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *SF_remove_done_callback(SendFuture *f, PyObject *fn) {
    Py_ssize_t removed = 0;
    if (f->cb != NULL) {
        int eq = PyObject_RichCompareBool(f->cb, fn, Py_EQ);
        if (eq < 0)
            return NULL;
        if (eq) {
            Py_CLEAR(f->cb);
            Py_CLEAR(f->cb_ctx);
            removed++;
        }
    }
    if (f->callbacks != NULL) {
        for (Py_ssize_t i = PyList_GET_SIZE(f->callbacks) - 1; i >= 0; i--) {
            int eq = PyObject_RichCompareBool(PyTuple_GET_ITEM(PyList_GET_ITEM(f->callbacks, i), 0), fn, Py_EQ);
            if (eq < 0)
                return NULL;
            if (eq) {
                if (PySequence_DelItem(f->callbacks, i) < 0)
                    return NULL;
                removed++;
            }
        }
    }
    return PyLong_FromSsize_t(removed);
}

static PyObject *SF_get_loop(SendFuture *f, PyObject *unused) { return Py_NewRef(f->loop); }

/* await: yield self while pending (the Task then waits on it), then return
 * the result or raise. */
static PyObject *SF_iternext(SendFuture *f) {
    if (f->state == SF_PENDING) {
        f->blocking = 1;
        return Py_NewRef((PyObject *)f);
    }
    PyObject *r = SF_result(f, NULL);
    if (r == NULL)
        return NULL;
    /* StopIteration(r), built first: a tuple (RecordMetadata) given to
     * PyErr_SetObject would become the exception's args. */
    PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, r);
    Py_DECREF(r);
    if (stop != NULL) {
        PyErr_SetObject(PyExc_StopIteration, stop);
        Py_DECREF(stop);
    }
    return NULL;
}

static PyObject *SF_await(SendFuture *f) { return Py_NewRef((PyObject *)f); }

static PyObject *SF_get_blocking(SendFuture *f, void *c) { return PyBool_FromLong(f->blocking); }

static int SF_set_blocking(SendFuture *f, PyObject *v, void *c) {
    if (v == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete _asyncio_future_blocking");
        return -1;
    }
    int b = PyObject_IsTrue(v);
    if (b < 0)
        return -1;
    f->blocking = b;
    return 0;
}

static PyObject *SF_get_topic(SendFuture *f, void *c) { return Py_NewRef(f->topic); }

static PyObject *SF_get_loop_attr(SendFuture *f, void *c) { return Py_NewRef(f->loop); }

static PyObject *SF_repr(SendFuture *f) {
    static const char *names[] = {"pending", "finished", "cancelled"};
    return PyUnicode_FromFormat("<kpush SendFuture %s topic=%R>", names[f->state], f->topic);
}

static PyMethodDef SF_methods[] = {
    {"done", (PyCFunction)SF_done, METH_NOARGS, "Whether the future has an outcome (or was cancelled)."},
    {"cancelled", (PyCFunction)SF_cancelled, METH_NOARGS, "Whether the future was cancelled."},
    {"result", (PyCFunction)SF_result, METH_NOARGS, "The RecordMetadata; raises the record's error."},
    {"exception", (PyCFunction)SF_exception, METH_NOARGS, "The record's error, or None."},
    {"set_result", (PyCFunction)SF_set_result, METH_O, "Complete; callbacks are scheduled with loop.call_soon."},
    {"set_exception", (PyCFunction)SF_set_exception, METH_O, "Fail; callbacks are scheduled with loop.call_soon."},
    {"cancel", (PyCFunction)(void (*)(void))SF_cancel, METH_FASTCALL | METH_KEYWORDS, "cancel(msg=None), as asyncio.Future."},
    {"add_done_callback", (PyCFunction)(void (*)(void))SF_add_done_callback, METH_FASTCALL | METH_KEYWORDS,
     "add_done_callback(fn, *, context=None), as asyncio.Future."},
    {"remove_done_callback", (PyCFunction)SF_remove_done_callback, METH_O, "As asyncio.Future."},
    {"get_loop", (PyCFunction)SF_get_loop, METH_NOARGS, "The event loop the future belongs to."},
    {NULL},
};

static PyGetSetDef SF_getset[] = {
    {"_asyncio_future_blocking", (getter)SF_get_blocking, (setter)SF_set_blocking, "asyncio's Future protocol flag", NULL},
    {"topic", (getter)SF_get_topic, NULL, "the record's topic", NULL},
    {"_loop", (getter)SF_get_loop_attr, NULL, "the event loop", NULL},
    {NULL},
};

static PyAsyncMethods SF_as_async = {.am_await = (unaryfunc)SF_await};

static PyTypeObject SendFutureType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "kpush._speedups.SendFuture",
    .tp_doc = PyDoc_STR("The future of one awaited send (asyncio's Future protocol); made by Fast.send"),
    .tp_basicsize = sizeof(SendFuture),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_dealloc = (destructor)SF_dealloc,
    .tp_traverse = (traverseproc)SF_traverse,
    .tp_clear = (inquiry)SF_clear,
    .tp_methods = SF_methods,
    .tp_getset = SF_getset,
    .tp_as_async = &SF_as_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)SF_iternext,
    .tp_repr = (reprfunc)SF_repr,
};

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
                PyObject *md = make_md(self, f->topic, partition, offset, ts);
                if (md == NULL)
                    PyErr_WriteUnraisable(entry);
                else
                    sf_resolve_now(f, md, &self->fatal); /* runs the awaiting task's step now */
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

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "kpush._speedups", "kpush's per-record asyncio path in C (see kpush/_fast.py).", -1, NULL,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    if (PyType_Ready(&FastType) < 0 || PyType_Ready(&SendFutureType) < 0)
        return NULL;
    str_done = PyUnicode_InternFromString("done");
    str_set_result = PyUnicode_InternFromString("set_result");
    str_thread_id = PyUnicode_InternFromString("_thread_id");
    str_call_soon = PyUnicode_InternFromString("call_soon");
    str_context = PyUnicode_InternFromString("context");
    str_call_exception_handler = PyUnicode_InternFromString("call_exception_handler");
    if (str_done == NULL || str_set_result == NULL || str_thread_id == NULL || str_call_soon == NULL ||
        str_context == NULL || str_call_exception_handler == NULL)
        return NULL;
    PyObject *exc = PyImport_ImportModule("asyncio.exceptions");
    if (exc == NULL)
        return NULL;
    CancelledError = PyObject_GetAttrString(exc, "CancelledError");
    InvalidStateError = PyObject_GetAttrString(exc, "InvalidStateError");
    Py_DECREF(exc);
    if (CancelledError == NULL || InvalidStateError == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&FastType);
    if (PyModule_AddObject(m, "Fast", (PyObject *)&FastType) < 0) {
        Py_DECREF(&FastType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&SendFutureType);
    if (PyModule_AddObject(m, "SendFuture", (PyObject *)&SendFutureType) < 0) {
        Py_DECREF(&SendFutureType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
