/* kpush._speedups, part 2 (the module is _speedups.c). */
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
#include "_speedups.h"

static PyObject *CancelledError, *InvalidStateError, *current_task;
static PyObject *str_call_soon, *str_context, *str_call_exception_handler, *str_msg;

/* After tp_clear (a reference cycle being collected) the fields are NULL:
 * methods raise instead of dereferencing them. */
static int sf_cleared(SendFuture *f) {
    if (f->loop != NULL && f->topic != NULL)
        return 0;
    PyErr_SetString(PyExc_RuntimeError, "kpush SendFuture object is not initialized (cleared)");
    return 1;
}

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

/* As asyncio.Future.__del__: an exception nobody retrieved goes to the
 * loop's exception handler. Only a failed, unread future pays for it. */
static void SF_finalize(SendFuture *f) {
    if (!f->log_tb || f->loop == NULL || f->exception == NULL)
        return;
    f->log_tb = 0;
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyObject *d = Py_BuildValue("{s:s,s:O,s:O}", "message", "kpush SendFuture exception was never retrieved", "exception",
                                f->exception, "future", (PyObject *)f);
    PyObject *r = d == NULL ? NULL : PyObject_CallMethodOneArg(f->loop, str_call_exception_handler, d);
    Py_XDECREF(d);
    if (r == NULL)
        PyErr_WriteUnraisable((PyObject *)f);
    Py_XDECREF(r);
    PyErr_Restore(t, v, tb);
}

static void SF_dealloc(SendFuture *f) {
    if (f->log_tb && PyObject_CallFinalizerFromDealloc((PyObject *)f) < 0)
        return; /* resurrected */
    PyObject_GC_UnTrack(f);
    SF_clear(f);
    Py_TYPE(f)->tp_free((PyObject *)f);
}

SendFuture *sf_new(PyObject *loop, PyObject *topic) {
    SendFuture *f = PyObject_GC_New(SendFuture, &SendFutureType);
    if (f == NULL)
        return NULL;
    f->loop = Py_NewRef(loop);
    f->topic = Py_NewRef(topic);
    f->result = f->exception = f->cancel_msg = f->cb = f->cb_ctx = f->callbacks = NULL;
    f->state = SF_PENDING;
    f->blocking = 0;
    f->log_tb = 0;
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
    if (sf_cleared(f))
        return -1;
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

/* Runs fn(f) in ctx now (as Handle._run would): a KeyboardInterrupt or
 * SystemExit is stored in *fatal (the first one) for the caller to raise
 * later; any other exception (CancelledError and GeneratorExit too) goes to
 * the loop's exception handler. */
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
    if (v != NULL && (PyErr_GivenExceptionMatches(v, PyExc_KeyboardInterrupt) ||
                      PyErr_GivenExceptionMatches(v, PyExc_SystemExit))) {
        if (*fatal == NULL)
            *fatal = Py_NewRef(v);
    } else if (v != NULL && f->loop != NULL) {
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

int sf_no_task_running(PyObject *loop) {
    PyObject *t = PyObject_CallOneArg(current_task, loop);
    if (t == NULL)
        return -1;
    int none = t == Py_None;
    Py_DECREF(t);
    return none;
}

/* Completes f with result (stolen) and runs its callbacks now (direct) or
 * schedules them (a task is running, so a wake-up could not enter its own). */
void sf_resolve_now(SendFuture *f, PyObject *result, PyObject **fatal, int direct) {
    f->result = result;
    f->state = SF_DONE;
    if (!direct) {
        if (sf_schedule_callbacks(f) < 0)
            PyErr_WriteUnraisable((PyObject *)f);
        return;
    }
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
    f->log_tb = 0;
    if (f->exception != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(f->exception), f->exception);
        return NULL;
    }
    if (f->result == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "kpush SendFuture object is not initialized (cleared)");
        return NULL;
    }
    return Py_NewRef(f->result);
}

static PyObject *SF_exception(SendFuture *f, PyObject *unused) {
    if (f->state == SF_CANCELLED)
        return sf_cancelled_error(f);
    if (f->state == SF_PENDING)
        return invalid_state("Exception is not set.");
    f->log_tb = 0;
    return Py_NewRef(f->exception ? f->exception : Py_None);
}

static PyObject *SF_set_result(SendFuture *f, PyObject *v) {
    if (sf_cleared(f))
        return NULL;
    if (f->state != SF_PENDING)
        return invalid_state("invalid state");
    f->result = Py_NewRef(v);
    f->state = SF_DONE;
    if (sf_schedule_callbacks(f) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *SF_set_exception(SendFuture *f, PyObject *e) {
    if (sf_cleared(f))
        return NULL;
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
    if (PyErr_GivenExceptionMatches(e, PyExc_StopIteration)) {
        Py_DECREF(e);
        PyErr_SetString(PyExc_TypeError, "StopIteration interacts badly with generators and cannot be raised into a Future");
        return NULL;
    }
    f->exception = e;
    f->log_tb = 1;
    f->state = SF_DONE;
    if (sf_schedule_callbacks(f) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *SF_cancel(SendFuture *f, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs + nkw > 1) {
        PyErr_SetString(PyExc_TypeError, "cancel() takes at most 1 argument (msg)");
        return NULL;
    }
    if (nkw == 1 && PyUnicode_Compare(PyTuple_GET_ITEM(kwnames, 0), str_msg) != 0) {
        PyErr_Format(PyExc_TypeError, "cancel() got an unexpected keyword argument %R", PyTuple_GET_ITEM(kwnames, 0));
        return NULL;
    }
    PyObject *msg = nargs + nkw == 1 ? args[0] : Py_None;
    f->log_tb = 0;
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
    if (nkw == 1 && PyUnicode_Compare(PyTuple_GET_ITEM(kwnames, 0), str_context) != 0) {
        PyErr_Format(PyExc_TypeError, "add_done_callback() got an unexpected keyword argument %R", PyTuple_GET_ITEM(kwnames, 0));
        return NULL;
    }
    if (sf_cleared(f))
        return NULL;
    PyObject *fn = args[0], *ctx;
    /* asyncio: no context= (or None) means a copy of the current one. The
     * awaiting task's wake-up always passes its own, so this is off the
     * per-record path. */
    if (nkw == 0 || args[1] == Py_None) {
        if ((ctx = PyContext_CopyCurrent()) == NULL)
            return NULL;
    } else {
        ctx = Py_NewRef(args[1]);
    }
    if (f->state != SF_PENDING) {
        PyObject *call_soon = PyObject_GetAttr(f->loop, str_call_soon);
        if (call_soon == NULL) {
            Py_DECREF(ctx);
            return NULL;
        }
        PyObject *kwn = PyTuple_Pack(1, str_context);
        PyObject *stack[3] = {fn, (PyObject *)f, ctx};
        PyObject *r = kwn == NULL ? NULL : PyObject_Vectorcall(call_soon, stack, 2, kwn);
        Py_XDECREF(kwn);
        Py_DECREF(call_soon);
        Py_DECREF(ctx);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
        Py_RETURN_NONE;
    }
    if (f->cb == NULL && f->callbacks == NULL) {
        f->cb = Py_NewRef(fn);
        f->cb_ctx = ctx; /* the reference taken above */
        Py_RETURN_NONE;
    }
    if (f->callbacks == NULL && (f->callbacks = PyList_New(0)) == NULL) {
        Py_DECREF(ctx);
        return NULL;
    }
    PyObject *pair = PyTuple_Pack(2, fn, ctx);
    Py_DECREF(ctx);
    if (pair == NULL)
        return NULL;
    int rc = PyList_Append(f->callbacks, pair);
    Py_DECREF(pair);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* As asyncio's C Future: fn.__eq__ may run any Python, which can remove
 * callbacks, resolve f or clear it; so every item is referenced while it is
 * compared, the size re-read each step, and the list of the callbacks that
 * do not match rebuilt and put back only into the list it was built from. */
static PyObject *SF_remove_done_callback(SendFuture *f, PyObject *fn) {
    Py_ssize_t removed = 0;
    if (f->cb != NULL) {
        PyObject *cb = Py_NewRef(f->cb);
        int eq = PyObject_RichCompareBool(cb, fn, Py_EQ);
        if (eq > 0 && f->cb == cb) { /* still the same first callback */
            Py_CLEAR(f->cb);
            Py_CLEAR(f->cb_ctx);
            removed++;
        }
        Py_DECREF(cb);
        if (eq < 0)
            return NULL;
    }
    if (f->callbacks == NULL)
        return PyLong_FromSsize_t(removed);
    PyObject *list = Py_NewRef(f->callbacks);
    PyObject *keep = PyList_New(0);
    if (keep == NULL) {
        Py_DECREF(list);
        return NULL;
    }
    Py_ssize_t matched = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
        PyObject *pair = Py_NewRef(PyList_GET_ITEM(list, i));
        int eq = PyObject_RichCompareBool(PyTuple_GET_ITEM(pair, 0), fn, Py_EQ);
        int rc = eq == 0 ? PyList_Append(keep, pair) : 0;
        Py_DECREF(pair);
        if (eq < 0 || rc < 0) {
            Py_DECREF(keep);
            Py_DECREF(list);
            return NULL;
        }
        matched += eq;
    }
    int rc = 0;
    if (matched > 0 && f->callbacks == list) {
        rc = PyList_SetSlice(list, 0, PY_SSIZE_T_MAX, keep);
        removed += matched;
    }
    Py_DECREF(keep);
    Py_DECREF(list);
    return rc < 0 ? NULL : PyLong_FromSsize_t(removed);
}

static PyObject *SF_get_loop(SendFuture *f, PyObject *unused) { return sf_cleared(f) ? NULL : Py_NewRef(f->loop); }

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

static PyObject *SF_get_topic(SendFuture *f, void *c) { return sf_cleared(f) ? NULL : Py_NewRef(f->topic); }

static PyObject *SF_get_loop_attr(SendFuture *f, void *c) { return sf_cleared(f) ? NULL : Py_NewRef(f->loop); }

static PyObject *SF_repr(SendFuture *f) {
    static const char *names[] = {"pending", "finished", "cancelled"};
    if (f->topic == NULL)
        return PyUnicode_FromFormat("<kpush SendFuture %s (cleared)>", names[f->state]);
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

PyTypeObject SendFutureType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "kpush._speedups.SendFuture",
    .tp_doc = PyDoc_STR("The future of one awaited send (asyncio's Future protocol); made by Fast.send"),
    .tp_basicsize = sizeof(SendFuture),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_dealloc = (destructor)SF_dealloc,
    .tp_traverse = (traverseproc)SF_traverse,
    .tp_clear = (inquiry)SF_clear,
    .tp_finalize = (destructor)SF_finalize,
    .tp_methods = SF_methods,
    .tp_getset = SF_getset,
    .tp_as_async = &SF_as_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)SF_iternext,
    .tp_repr = (reprfunc)SF_repr,
};


int sf_module_init(void) {
    if (PyType_Ready(&SendFutureType) < 0)
        return -1;
    if (current_task != NULL && CancelledError != NULL && InvalidStateError != NULL)
        return 0; /* the module imported again (main interpreter only) */
    str_msg = PyUnicode_InternFromString("msg");
    str_call_soon = PyUnicode_InternFromString("call_soon");
    str_context = PyUnicode_InternFromString("context");
    str_call_exception_handler = PyUnicode_InternFromString("call_exception_handler");
    if (str_msg == NULL || str_call_soon == NULL || str_context == NULL || str_call_exception_handler == NULL)
        return -1;
    PyObject *aio = PyImport_ImportModule("asyncio");
    if (aio == NULL)
        return -1;
    current_task = PyObject_GetAttrString(aio, "current_task");
    Py_DECREF(aio);
    if (current_task == NULL)
        return -1;
    PyObject *exc = PyImport_ImportModule("asyncio.exceptions");
    if (exc == NULL)
        return -1;
    CancelledError = PyObject_GetAttrString(exc, "CancelledError");
    InvalidStateError = PyObject_GetAttrString(exc, "InvalidStateError");
    Py_DECREF(exc);
    return CancelledError == NULL || InvalidStateError == NULL ? -1 : 0;
}
