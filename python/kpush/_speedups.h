/* Shared between the two files of kpush._speedups: _speedups.c (the module,
 * Fast) and _sendfuture.c (SendFuture). */
#ifndef KPUSH_SPEEDUPS_H
#define KPUSH_SPEEDUPS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

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
    int log_tb;          /* an exception was set and not yet retrieved (as asyncio's __log_traceback) */
} SendFuture;

/* The SendFuture type (ready once sf_module_init succeeded). */
extern PyTypeObject SendFutureType;

/* A pending SendFuture of loop for a record of topic (new reference). */
SendFuture *sf_new(PyObject *loop, PyObject *topic);

/* Completes f with result (stolen) and runs its done callbacks now; a
 * KeyboardInterrupt/SystemExit from one is stored in *fatal (the first).
 * With direct 0 (a task is running: its wake-ups could not enter theirs)
 * the callbacks are scheduled with loop.call_soon instead. */
void sf_resolve_now(SendFuture *f, PyObject *result, PyObject **fatal, int direct);

/* 1 if no task of loop is running now (resolve may run wake-ups directly),
 * 0 if one is, -1 on error. */
int sf_no_task_running(PyObject *loop);

/* Readies SendFutureType and the names and exceptions it uses; -1 on error. */
int sf_module_init(void);

#endif
