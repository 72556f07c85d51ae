/* The recorder's inline launch paths in C (optional: recorder/_accel.py builds and loads this file).
 *
 * Each type does exactly what its Python reference in recorder/_hot.py does, in the same order: `Hot` is
 * `_py_hot`'s `hot`, `Bound` is `make_launcher`'s `launcher`, `Instr` is `make_instr`'s `call`. Every state
 * change goes into the same Python objects (the recorder's instance dict, the stream state's cells and run,
 * the launch-map list, the producer cell), under the same lock, and every case that is not the common one calls
 * the same Python helpers. Only the interpreter's dispatch is taken out, and some allocations: launch-map
 * entries rewritten in place, a finished slot parked for the stream's next, one int for two cells that hold
 * the same value.
 *
 * It relies on the GIL (a free-threaded build is never given this module): the dict, list and counter
 * operations below are atomic under it, and the recorder's lock orders sequences with launches as in Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <structmember.h>
#include <stdint.h>
#include <time.h>

#define META_OPCODE_BASE 0xFFFFFF00LL
#define UNKNOWN_SLOT 0xFFFFFFFFLL
#define U32 0xFFFFFFFFLL

static PyObject *zero_int;  /* CPython's cached small int 0 */
static PyObject *s_cells, *s_instr_outstanding, *kw_launch, *kw_stream, *s_shared_mem, *s_stream, *s_coop;

/* PyLong_AsLongLongAndOverflow(v, overflow), without its call and checks for the common case: an exact int
 * of at most two digits (CPython's own compact ints, read as longobject.c reads them). */
static inline long long ll_of(PyObject *v, int *overflow) {
    *overflow = 0;
    if (PyLong_CheckExact(v)) {
#if PY_VERSION_HEX >= 0x030C0000
        if (PyUnstable_Long_IsCompact((PyLongObject *)v)) return PyUnstable_Long_CompactValue((PyLongObject *)v);
#else
        Py_ssize_t size = Py_SIZE(v);
        const digit *d = ((PyLongObject *)v)->ob_digit;
        switch (size) {
            case 0: return 0;
            case 1: return (long long)d[0];
            case -1: return -(long long)d[0];
            case 2: return (long long)d[0] | ((long long)d[1] << PyLong_SHIFT);
            case 3:  /* a stream's "no limit" (2**62 and up) is three digits: below 2**63 only */
                if (PyLong_SHIFT == 30 && d[2] < 8)
                    return (long long)d[0] | ((long long)d[1] << 30) | ((long long)d[2] << 60);
                break;
            default: break;
        }
#endif
    }
    return PyLong_AsLongLongAndOverflow(v, overflow);
}

static int words_ok(PyObject *w) {
    if (!PyTuple_CheckExact(w) || PyTuple_GET_SIZE(w) != 4) return 0;
    for (int i = 0; i < 4; i++) {
        PyObject *x = PyTuple_GET_ITEM(w, i);
        if (!PyLong_CheckExact(x)) return 0;
        int overflow;
        long long v = ll_of(x, &overflow);
        if (overflow || v < 0 || v > U32) return 0;
    }
    return 1;
}

/* The cells lists (`_StreamState.cells`, `Recorder._cells`) are made once and never resized or replaced;
 * their length is checked when a launcher is made. */

/* Cell i as an exact int in [0, 2**63), or -1 when it is not such an int (the caller goes general). */
static inline long long cell_ll(PyObject *cells, Py_ssize_t i) {
    PyObject *v = PyList_GET_ITEM(cells, i);
    if (!PyLong_CheckExact(v)) return -1;
    int overflow;
    long long r = ll_of(v, &overflow);
    return overflow ? -1 : r;
}

/* A cell store: the lists are exact, never resized and `i` is one of their indices, so the store needs
 * none of PyList_SetItem's checks. The old value is released after the store (a finalizer sees the new). */
static inline void cell_put(PyObject *cells, Py_ssize_t i, PyObject *o) {
    PyObject *old = PyList_GET_ITEM(cells, i);
    PyList_SET_ITEM(cells, i, o);
    Py_XDECREF(old);
}

/* The same for a tuple only this code holds (refcount 1): refilled in place. */
static inline void cell_put_tuple(PyObject *tup, Py_ssize_t i, PyObject *o) {
    PyObject *old = PyTuple_GET_ITEM(tup, i);
    PyTuple_SET_ITEM(tup, i, o);
    Py_XDECREF(old);
}

static int cell_set_ll(PyObject *cells, Py_ssize_t i, long long v) {
    PyObject *o = PyLong_FromLongLong(v);
    if (o == NULL) return -1;
    cell_put(cells, i, o);  /* steals o */
    return 0;
}

static int cell_set(PyObject *cells, Py_ssize_t i, PyObject *v) {
    cell_put(cells, i, Py_NewRef(v));
    return 0;
}

/* The flags cells hold True or False: read without a call. */
static inline int cell_true(PyObject *cells, Py_ssize_t i) {
    PyObject *v = PyList_GET_ITEM(cells, i);
    return v == Py_True ? 1 : v == Py_False ? 0 : PyObject_IsTrue(v);
}

/* Indices of the cells (recorder/_state.py, Recorder._cells). */
enum { ST_NEXT_SEQ, ST_LIMIT, ST_FAST, ST_OUTSTANDING, ST_CELLS };
enum { REC_SLOT_COUNTER, REC_EPOCH, REC_USABLE, REC_CELLS };

/* A remembered stream state still stands for `stream`: the weak reference still names that object (a new
 * stream at a freed one's address is another object) and its fast path has not been turned off. */
static inline int remembered(PyObject *ref, PyObject *cells, PyObject *stream) {
    return PyWeakref_GET_OBJECT(ref) == stream && PyList_GET_ITEM(cells, ST_FAST) == Py_True;
}

static PyObject *call0(PyObject *f) { return PyObject_Vectorcall(f, NULL, 0, NULL); }

/* The bound pack, called through its own vectorcall when it has one (a Python function, CuPy's): without
 * PyObject_Vectorcall's thread-state look-up and result check, which the NULL test below stands in for. */
static PyObject *call_pack(PyObject *pack, PyObject *const *args) {
    size_t nargsf = 6 | PY_VECTORCALL_ARGUMENTS_OFFSET;
    vectorcallfunc f = PyVectorcall_Function(pack);
    if (f == NULL) return PyObject_Vectorcall(pack, args, nargsf, NULL);
    PyObject *r = f(pack, args, nargsf, NULL);
    if (r == NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_SystemError, "the bound pack failed without an error");
    return r;
}

/* Call helper(args) with the pending exception passed as args[0] and restored afterwards (it propagates
 * unchanged, as `raise` after the helper does in Python). An exception from the helper replaces it, as in
 * Python. */
static void fail_with(PyObject *helper, PyObject **args, size_t n) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) PyException_SetTraceback(value, tb);
    args[0] = value;
    PyObject *r = PyObject_Vectorcall(helper, args, n, NULL);
    if (r == NULL) {
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        return;
    }
    Py_DECREF(r);
    PyErr_Restore(type, value, tb);
}

/* An entry is rewritten once per lap of the window (thousands of launches), so by then it and the ints it
 * holds (released as it is rewritten) are out of the cache: a miss each, about one bare call's time in a
 * launch loop. Fetched ahead instead: the entry 8 stores on, and the ints of the one 4 on (fetched 4
 * stores ago, so reading its items costs no miss). Only addresses are read; nothing is changed. */
static inline void prefetch_ahead(PyObject *window, Py_ssize_t at) {
    Py_ssize_t n = PyList_GET_SIZE(window);
    if (n < 16) return;  /* a small window stays in the cache */
    PyObject *far = PyList_GET_ITEM(window, (at + 8) & (n - 1));
    if (far != NULL) {
        __builtin_prefetch(far, 1);
        __builtin_prefetch((char *)far + 64, 1);
    }
    PyObject *near = PyList_GET_ITEM(window, (at + 4) & (n - 1));
    if (near != NULL && PyTuple_CheckExact(near) && PyTuple_GET_SIZE(near) == 7) {
        __builtin_prefetch(PyTuple_GET_ITEM(near, 0), 1);  /* the sequence and the slot: released then */
        __builtin_prefetch(PyTuple_GET_ITEM(near, 1), 1);
    }
}

/* The launch-map write `window[seq & wmask] = (seq, slot, opcode, w, epoch, outputs, begin)`: one list store.
 * When the tuple already in that slot is held by the window alone (refcount 1: nothing else can see it, and
 * the GIL is held), its items are replaced in place instead of allocating a new tuple, as CPython's own zip
 * and enumerate reuse their result tuples. Anyone who took the old entry (a lookup) holds a reference, so
 * gets a new tuple instead. Returns 0, or -1 with an exception. */
static int store_entry(PyObject *window, Py_ssize_t at, PyObject *seq, PyObject *slot, PyObject *opcode,
                       PyObject *w, PyObject *epoch, PyObject *outputs, PyObject *begin) {
    PyObject *items[7] = {seq, slot, opcode, w, epoch, outputs, begin};
    prefetch_ahead(window, at);
    PyObject *old = PyList_GET_ITEM(window, at);
    if (old != NULL && PyTuple_CheckExact(old) && Py_REFCNT(old) == 1 && PyTuple_GET_SIZE(old) == 7) {
        PyObject *prev[7];
        int changed = 0;
#pragma GCC unroll 7
        for (int i = 0; i < 7; i++) {
            PyObject *p = PyTuple_GET_ITEM(old, i);
            if (p == items[i]) continue;  /* the same opcode, words, epoch or None as last time: nothing to swap */
            prev[changed++] = p;
            Py_INCREF(items[i]);
            PyTuple_SET_ITEM(old, i, items[i]);
        }
        /* Outputs may be anything (a cycle could pass through it): then the collector must see the entry. */
        if (outputs != Py_None && !PyObject_GC_IsTracked(old)) PyObject_GC_Track(old);
        for (int i = 0; i < changed; i++) Py_DECREF(prev[i]);  /* after the stores: a finalizer sees a whole entry */
        return 0;
    }
    PyObject *t = PyTuple_New(7);
    if (t == NULL) return -1;
    for (int i = 0; i < 7; i++) {
        Py_INCREF(items[i]);
        PyTuple_SET_ITEM(t, i, items[i]);
    }
    /* Ints, None and the words (a tuple of ints, checked): no cycle can pass through it, so the collector
     * need not visit it (it would untrack it itself at its first pass). */
    if (outputs == Py_None) PyObject_GC_UnTrack(t);
    return PyList_SetItem(window, at, t);  /* steals t, releases the old entry */
}

/* ----------------------------------------------------------------------------------------------- RLock */

/* threading.RLock's semantics (owner thread, recursion count; a blocking acquire releases the GIL and runs
 * signal handlers when interrupted, as _thread.RLock does), with C entry points for Hot: taking the
 * recorder's lock is then two C calls instead of two method calls that parse arguments.
 *
 * Every caller holds the GIL, so the lock's state (owner, count, waiters) is plain fields read and written
 * under it: taking a free lock and giving it back touch no OS primitive (that was most of a launch's lock
 * cost). Only a thread that must wait blocks, without the GIL, on `wake`, a lock used as a binary
 * semaphore: held while no wake-up is pending (`posted` 0), released by the thread that frees the lock while
 * someone waits. A woken waiter takes the lock only if it is free when it holds the GIL again, else waits
 * again, so a wake-up that another thread beat it to is never lost nor double-counted. */

typedef struct {
    PyObject_HEAD
    PyThread_type_lock wake;
    unsigned long owner;
    unsigned long count;
    unsigned long waiters;
    int posted;
} RLock;

static PyTypeObject RLockType;

static long long monotonic_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

/* timeout_us < 0: wait forever; 0: do not wait. Returns 1 acquired, 0 not (timeout), -1 error. */
static int rlock_take(RLock *r, PY_TIMEOUT_T timeout_us) {
    unsigned long me = PyThread_get_thread_ident();
    if (r->count > 0 && r->owner == me) {
        if (r->count == (unsigned long)-1) {
            PyErr_SetString(PyExc_OverflowError, "internal lock count overflowed");
            return -1;
        }
        r->count++;
        return 1;
    }
    if (r->count > 0) {
        if (timeout_us == 0) return 0;
        long long deadline = timeout_us > 0 ? monotonic_us() + (long long)timeout_us : 0;
        r->waiters++;
        for (;;) {
            PY_TIMEOUT_T left = -1;
            if (timeout_us > 0) {
                long long rest = deadline - monotonic_us();
                left = rest > 0 ? (PY_TIMEOUT_T)rest : 0;
            }
            PyLockStatus st;
            Py_BEGIN_ALLOW_THREADS
            st = PyThread_acquire_lock_timed(r->wake, left, 1);
            Py_END_ALLOW_THREADS
            if (st == PY_LOCK_ACQUIRED) r->posted = 0;
            if (r->count == 0) break;
            if (st == PY_LOCK_INTR && Py_MakePendingCalls() < 0) {  /* a signal handler raised */
                r->waiters--;
                return -1;
            }
            if (st == PY_LOCK_FAILURE && left == 0) {
                r->waiters--;
                return 0;
            }
        }
        r->waiters--;
    }
    r->owner = me;
    r->count = 1;
    return 1;
}

/* One release by the owner (the caller knows it is this thread). */
static inline void rlock_drop(RLock *r) {
    if (--r->count == 0) {
        r->owner = 0;
        if (r->waiters > 0 && !r->posted) {
            r->posted = 1;
            PyThread_release_lock(r->wake);
        }
    }
}

static int rlock_give(RLock *r) {
    if (r->count == 0 || r->owner != PyThread_get_thread_ident()) {
        PyErr_SetString(PyExc_RuntimeError, "cannot release un-acquired lock");
        return -1;
    }
    rlock_drop(r);
    return 0;
}

static PyObject *rlock_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    if ((kw != NULL && PyDict_GET_SIZE(kw)) || PyTuple_GET_SIZE(args)) {
        PyErr_SetString(PyExc_TypeError, "RLock() takes no arguments");
        return NULL;
    }
    RLock *r = (RLock *)type->tp_alloc(type, 0);
    if (r == NULL) return NULL;
    r->wake = PyThread_allocate_lock();
    if (r->wake == NULL) {
        Py_DECREF(r);
        PyErr_SetString(PyExc_MemoryError, "cannot allocate lock");
        return NULL;
    }
    PyThread_acquire_lock(r->wake, WAIT_LOCK);  /* new and unshared: no wait */
    return (PyObject *)r;
}

static void rlock_dealloc(RLock *r) {
    if (r->wake != NULL) {
        if (!r->posted) PyThread_release_lock(r->wake);  /* as _thread's lock_dealloc: never free it held */
        PyThread_free_lock(r->wake);
    }
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static PyObject *rlock_acquire(RLock *r, PyObject *args, PyObject *kw) {
    static char *names[] = {"blocking", "timeout", NULL};
    int blocking = 1;
    double timeout = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|pd:acquire", names, &blocking, &timeout)) return NULL;
    if (!blocking && timeout != -1) {
        PyErr_SetString(PyExc_ValueError, "can't specify a timeout for a non-blocking call");
        return NULL;
    }
    if (timeout < 0 && timeout != -1) {
        PyErr_SetString(PyExc_ValueError, "timeout value must be a non-negative number");
        return NULL;
    }
    PY_TIMEOUT_T us = !blocking ? 0 : timeout < 0 ? -1 : (PY_TIMEOUT_T)(timeout * 1e6);
    int got = rlock_take(r, us);
    if (got < 0) return NULL;
    return PyBool_FromLong(got);
}

static PyObject *rlock_enter(RLock *r, PyObject *unused) {
    if (rlock_take(r, -1) < 0) return NULL;
    Py_RETURN_TRUE;
}

static PyObject *rlock_release(RLock *r, PyObject *unused) {
    if (rlock_give(r) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *rlock_exit(RLock *r, PyObject *args) {
    if (rlock_give(r) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *rlock_is_owned(RLock *r, PyObject *unused) {
    return PyBool_FromLong(r->count > 0 && r->owner == PyThread_get_thread_ident());
}

static PyObject *rlock_repr(RLock *r) {
    return PyUnicode_FromFormat("<%s %s object owner=%lu count=%lu at %p>", r->count ? "locked" : "unlocked",
                                Py_TYPE(r)->tp_name, r->owner, r->count, r);
}

static PyMethodDef rlock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))rlock_acquire, METH_VARARGS | METH_KEYWORDS, NULL},
    {"release", (PyCFunction)rlock_release, METH_NOARGS, NULL},
    {"__enter__", (PyCFunction)rlock_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)rlock_exit, METH_VARARGS, NULL},
    {"_is_owned", (PyCFunction)rlock_is_owned, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RLockType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "vrrl_gpu.recorder._vrrl_fast.RLock",
    .tp_basicsize = sizeof(RLock),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = rlock_new,
    .tp_dealloc = (destructor)rlock_dealloc,
    .tp_methods = rlock_methods,
    .tp_repr = (reprfunc)rlock_repr,
    .tp_doc = "threading.RLock for the recorder's lock, with C entry points for the launch path",
};

/* ------------------------------------------------------------------------------------------------- Hot */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *rec_cells, *st_cells, *run, *acquire, *release, *window, *pack, *launch, *probe, *words_fn, *room,
        *slow, *pack_failed, *launch_failed, *note_slot, *zero_words, *lock, *produced_obj, *begin, *completed,
        *slow_end, *general_slot, *checked, *idle;
    Py_buffer produced;
    Py_ssize_t wmask;
    long long end;
} Hot;

#define HOT_FIELDS(X)                                                                                        \
    X(rec_cells) X(st_cells) X(run) X(acquire) X(release) X(window) X(pack) X(launch) X(probe) X(words_fn) X(room)   \
    X(slow) X(pack_failed) X(launch_failed) X(note_slot) X(zero_words) X(lock) X(produced_obj) X(begin)       \
    X(completed) X(slow_end) X(general_slot) X(checked) X(idle)

static int hot_traverse(Hot *h, visitproc visit, void *arg) {
#define V(f) Py_VISIT(h->f);
    HOT_FIELDS(V)
#undef V
    return 0;
}

static int hot_clear(Hot *h) {
#define C(f) Py_CLEAR(h->f);
    HOT_FIELDS(C)
#undef C
    return 0;
}

static void hot_dealloc(Hot *h) {
    PyObject_GC_UnTrack(h);
    if (h->produced.obj != NULL) PyBuffer_Release(&h->produced);
    hot_clear(h);
    Py_TYPE(h)->tp_free((PyObject *)h);
}

static PyObject *hot_slow(Hot *h, PyObject *const *a, PyObject *w, PyObject *captured) {
    PyObject *args[10] = {a[0], a[1], a[2], a[3], a[4], w, a[6], a[7], a[8], captured};
    return PyObject_Vectorcall(h->slow, args, 10, NULL);
}

/* A claimed slot: its index, epoch and begin sequence (new references) and the begin sequence + 1. */
typedef struct {
    PyObject *slot, *epoch, *seq, *s1;
    long long seq_ll;
} Claim;

static void claim_clear(Claim *c) {
    Py_CLEAR(c->slot);
    Py_CLEAR(c->epoch);
    Py_CLEAR(c->seq);
    Py_CLEAR(c->s1);
}

/* `_py_hot`'s `claim`, with the lock held: a new slot and its begin breadcrumb, room left for `need` more
 * sequences after it. Returns 1 (claimed: `c` filled), 0 (the general path: `*captured` is what it is told,
 * borrowed None or True) or -1 (an exception). */
static int hot_claim(Hot *h, PyObject *opcode, PyObject *w, PyObject *stream, long long need, PyObject *outputs,
                     Claim *c, PyObject **captured) {
    *captured = Py_None;
    int t = cell_true(h->st_cells, ST_FAST);
    if (t < 0) return -1;
    int general = !t || !PyLong_CheckExact(opcode);
    if (!general) {
        int overflow;
        long long op = ll_of(opcode, &overflow);
        general = overflow || op < 0 || op >= META_OPCODE_BASE;
    }
    if (!general) {
        t = cell_true(h->rec_cells, REC_USABLE);
        if (t < 0) return -1;
        general = !t;
    }
    if (general) return 0;
    if (h->probe != Py_None) {
        PyObject *r = PyObject_Vectorcall(h->probe, &stream, 1, NULL);
        if (r == NULL) return -1;
        t = PyObject_IsTrue(r);
        Py_DECREF(r);
        if (t < 0) return -1;
        if (t) {
            *captured = Py_True;
            return 0;
        }
    }
    long long seq = cell_ll(h->st_cells, ST_NEXT_SEQ), limit = cell_ll(h->st_cells, ST_LIMIT);
    long long counter = cell_ll(h->rec_cells, REC_SLOT_COUNTER);
    if (seq < 0 || limit < 0 || counter < 0) return 0;  /* not the plain ints kept */
    /* The cells hold these very values (exact ints, just read): taken now, no new int for either. */
    c->seq = Py_NewRef(PyList_GET_ITEM(h->st_cells, ST_NEXT_SEQ));
    if (counter < UNKNOWN_SLOT) {
        c->slot = Py_NewRef(PyList_GET_ITEM(h->rec_cells, REC_SLOT_COUNTER));
    } else {
        c->slot = PyLong_FromLongLong(counter % UNKNOWN_SLOT);  /* never UNKNOWN_SLOT itself */
        if (c->slot == NULL) goto fail;
    }
    if (seq + need >= limit) {
        PyObject *s = PyLong_FromLongLong(seq + need);
        if (s == NULL) goto fail;
        PyObject *r = PyObject_Vectorcall(h->room, &s, 1, NULL);
        Py_DECREF(s);
        if (r == NULL) goto fail;
        t = PyObject_IsTrue(r);
        Py_DECREF(r);
        if (t < 0) goto fail;
        if (!t) {
            claim_clear(c);
            return 0;
        }
    }
    PyObject *epoch = PyList_GET_ITEM(h->rec_cells, REC_EPOCH);
    Py_INCREF(epoch);
    c->epoch = epoch;
    c->seq_ll = seq;

    {
        /* A slot before the arguments: a bound method (or an instance's __call__) needs no copy for self. */
        PyObject *pargs[7] = {NULL, c->seq, c->slot, opcode, w, epoch, h->begin};
        PyObject *r = call_pack(h->pack, pargs + 1);
        if (r == NULL) {
            PyObject *fargs[2] = {NULL, NULL};
            fail_with(h->pack_failed, fargs, 1);
            goto fail;
        }
        Py_DECREF(r);
    }
    if (store_entry(h->window, seq & h->wmask, c->seq, c->slot, opcode, w, epoch, outputs, c->seq) < 0) goto fail;
    c->s1 = PyLong_FromLongLong(seq + 1);
    if (c->s1 == NULL || cell_set(h->st_cells, ST_NEXT_SEQ, c->s1) < 0) goto fail;
    *(uint64_t *)h->produced.buf = (uint64_t)(seq + 1);
    if (cell_set_ll(h->rec_cells, REC_SLOT_COUNTER, counter + 1) < 0) goto fail;
    {
        PyObject *run = h->run;  /* `st.run`: one list for the stream's life (note_slot rewrites it in place) */
        int extended = 0;
        if (PyList_GET_SIZE(run) == 3) {
            int o0 = 0, o1 = 0, o2 = 0;
            long long r0 = ll_of(PyList_GET_ITEM(run, 0), &o0);
            long long r1 = ll_of(PyList_GET_ITEM(run, 1), &o1);
            long long r2 = ll_of(PyList_GET_ITEM(run, 2), &o2);
            if ((r0 == -1 || r1 == -1 || r2 == -1) && PyErr_Occurred()) goto fail;
            /* Not the small ints the runs hold (o0..o2): Python decides (note_slot compares exactly too). */
            if (!o0 && !o1 && !o2 && (__int128)r0 + (__int128)r1 * r2 == counter % UNKNOWN_SLOT) {
                /* A run from slot 0 with stride 1 (a recorder's first stream) counts as the slot counter
                 * does: the counter's new int serves both, one allocation instead of two. */
                PyObject *nc = PyList_GET_ITEM(h->rec_cells, REC_SLOT_COUNTER);
                PyObject *n = r2 == counter ? Py_NewRef(nc) : PyLong_FromLongLong(r2 + 1);
                if (n == NULL) goto fail;
                cell_put(run, 2, n);  /* an exact list of three (checked above): steals n */
                extended = 1;
            }
        }
        if (!extended) {
            PyObject *nargs[2] = {NULL, c->slot};
            PyObject *r = PyObject_Vectorcall(h->note_slot, nargs + 1, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
            if (r == NULL) goto fail;
            Py_DECREF(r);
        }
    }
    if (cell_set(h->st_cells, ST_OUTSTANDING, Py_True) < 0) goto fail;
    return 1;
fail:
    claim_clear(c);
    return -1;
}

/* The body, with the lock held. Returns a new reference (None) or NULL with an exception set. */
static PyObject *hot_locked(Hot *h, PyObject *const *a, PyObject *w) {
    PyObject *kernel = a[0], *grid = a[1], *block = a[2], *args = a[3], *opcode = a[4], *stream = a[6];
    PyObject *shared_mem = a[7], *outputs = a[8];
    Claim c = {NULL, NULL, NULL, NULL, 0};
    PyObject *captured;
    int got = hot_claim(h, opcode, w, stream, h->end, outputs, &c, &captured);
    if (got < 0) return NULL;
    if (got == 0) return hot_slow(h, a, w, captured);
    PyObject *res = NULL;
    {
        /* shared_mem=0 is the backends' default (Backend.launch): left out, a keyword less to bind. */
        int no_shm = shared_mem == zero_int;  /* CPython's cached 0: what a literal or a default 0 is */
        PyObject *largs[7] = {NULL, kernel, grid, block, args, stream, shared_mem};
        PyObject *r = PyObject_Vectorcall(h->launch, largs + 1, 4 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                          no_shm ? kw_stream : kw_launch);
        if (r == NULL) {
            PyObject *fargs[8] = {NULL, c.slot, opcode, w, c.epoch, c.seq, outputs, Py_False};
            fail_with(h->launch_failed, fargs, 8);
            goto done;
        }
        Py_DECREF(r);
    }
    if (h->end) {
        PyObject *pargs[7] = {NULL, c.s1, c.slot, opcode, w, c.epoch, h->completed};
        PyObject *r = call_pack(h->pack, pargs + 1);
        if (r == NULL) {
            /* The kernel was enqueued: the device may have run it and faulted in it (launched=True). */
            PyObject *fargs[8] = {NULL, c.slot, opcode, w, c.epoch, c.seq, outputs, Py_True};
            fail_with(h->launch_failed, fargs, 8);
            goto done;
        }
        Py_DECREF(r);
        if (store_entry(h->window, (c.seq_ll + 1) & h->wmask, c.s1, c.slot, opcode, w, c.epoch, outputs, c.seq) < 0 ||
            cell_set_ll(h->st_cells, ST_NEXT_SEQ, c.seq_ll + 2) < 0)
            goto done;
        *(uint64_t *)h->produced.buf = (uint64_t)(c.seq_ll + 2);
    }
    res = Py_None;
    Py_INCREF(res);
done:
    claim_clear(&c);
    return res;
}

/* Take the recorder's lock: our RLock C to C, any other lock by its acquire(). 0, or -1 with an exception. */
static int hot_lock(Hot *h) {
    if (Py_TYPE(h->lock) == &RLockType) return rlock_take((RLock *)h->lock, -1) < 0 ? -1 : 0;
    PyObject *r = call0(h->acquire);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* `finally: lock.release()` after a body that returned `res` (NULL: an exception is set): an exception from
 * release replaces the body's, as in Python. Our own lock cannot fail to release here (this thread holds
 * it). Returns `res`, or NULL. */
static PyObject *hot_unlock(Hot *h, PyObject *res) {
    if (Py_TYPE(h->lock) == &RLockType) {
        rlock_drop((RLock *)h->lock);  /* taken by this thread in hot_lock: no owner look-up */
        return res;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *r = call0(h->release);
    if (r == NULL) {
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        Py_XDECREF(res);
        return NULL;
    }
    Py_DECREF(r);
    PyErr_Restore(type, value, tb);
    return res;
}

/* `_words` of a launch's words: a new reference, or NULL with what `_words` raises. */
static PyObject *hot_words(Hot *h, PyObject *words) {
    if (words == Py_None) {
        Py_INCREF(h->zero_words);
        return h->zero_words;
    }
    /* A tuple of ints never changes: the one checked last (often the same object again) is not checked again. */
    if (words == h->checked) return Py_NewRef(words);
    if (words_ok(words)) {
        Py_XSETREF(h->checked, Py_NewRef(words));
        return Py_NewRef(words);
    }
    return PyObject_Vectorcall(h->words_fn, &words, 1, NULL);
}

/* `hot(kernel, grid, block, args, opcode, words, stream, shared_mem, outputs)`; `checked`: the words are
 * `_words`' already (a launcher's, checked when it was made: `body` in the Python reference). */
static PyObject *hot_run(Hot *h, PyObject *const *a, int checked) {
    PyObject *w = checked ? Py_NewRef(a[5]) : hot_words(h, a[5]);
    if (w == NULL) return NULL;
    if (hot_lock(h) < 0) {
        Py_DECREF(w);
        return NULL;
    }
    PyObject *res = hot_unlock(h, hot_locked(h, a, w));
    Py_DECREF(w);
    return res;
}

static PyObject *hot_vectorcall(PyObject *self, PyObject *const *a, size_t nargsf, PyObject *kwnames) {
    if (PyVectorcall_NARGS(nargsf) != 9 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError,
                        "hot(kernel, grid, block, args, opcode, words, stream, shared_mem, outputs)");
        return NULL;
    }
    return hot_run((Hot *)self, a, 0);
}

static PyObject *hot_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *rec_cells, *st_cells, *run, *lock, *window, *pack, *produced, *launch, *probe, *words_fn, *room, *slow,
        *pack_failed, *launch_failed, *note_slot, *zero, *begin, *completed, *slow_end, *general_slot;
    Py_ssize_t wmask;
    long long end;
    if (!PyArg_ParseTuple(args, "O!O!O!OO!nOOOOLOOOOOOOOOOO", &PyList_Type, &rec_cells, &PyList_Type, &st_cells,
                          &PyList_Type, &run, &lock, &PyList_Type, &window, &wmask, &pack, &produced, &launch, &probe, &end,
                          &words_fn, &room, &slow, &pack_failed, &launch_failed, &note_slot, &zero, &begin,
                          &completed, &slow_end, &general_slot))
        return NULL;
    if (PyList_GET_SIZE(rec_cells) != REC_CELLS || PyList_GET_SIZE(st_cells) != ST_CELLS) {
        PyErr_SetString(PyExc_ValueError, "unexpected cells");
        return NULL;
    }
    if (wmask < 0 || PyList_GET_SIZE(window) != wmask + 1) {
        PyErr_SetString(PyExc_ValueError, "the window's length must be wmask + 1");
        return NULL;
    }
    Hot *h = (Hot *)type->tp_alloc(type, 0);
    if (h == NULL) return NULL;
    h->vectorcall = hot_vectorcall;
    if (PyObject_GetBuffer(produced, &h->produced, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        h->produced.obj = NULL;
        Py_DECREF(h);
        return NULL;
    }
    if (h->produced.len < 8) {
        PyErr_SetString(PyExc_ValueError, "the producer cell must hold a u64");
        Py_DECREF(h);
        return NULL;
    }
    h->acquire = PyObject_GetAttrString(lock, "acquire");
    h->release = PyObject_GetAttrString(lock, "release");
    if (h->acquire == NULL || h->release == NULL) {
        Py_DECREF(h);
        return NULL;
    }
#define SET(f, v) Py_INCREF(v); h->f = v;
    SET(rec_cells, rec_cells) SET(st_cells, st_cells) SET(run, run) SET(window, window) SET(pack, pack) SET(launch, launch)
    SET(probe, probe) SET(words_fn, words_fn) SET(room, room) SET(slow, slow) SET(pack_failed, pack_failed)
    SET(launch_failed, launch_failed) SET(note_slot, note_slot) SET(zero_words, zero) SET(lock, lock)
    SET(produced_obj, produced) SET(begin, begin) SET(completed, completed) SET(slow_end, slow_end)
    SET(general_slot, general_slot)
#undef SET
    h->wmask = wmask;
    h->end = end ? 1 : 0;
    return (PyObject *)h;
}

static PyObject *hot_slot_method(Hot *h, PyObject *const *a, Py_ssize_t n);

static PyMethodDef hot_methods[] = {
    {"slot", (PyCFunction)(void (*)(void))hot_slot_method, METH_FASTCALL, "slot(opcode, words, stream)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject HotType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "vrrl_gpu.recorder._vrrl_fast.Hot",
    .tp_basicsize = sizeof(Hot),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Hot, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = hot_new,
    .tp_dealloc = (destructor)hot_dealloc,
    .tp_traverse = (traverseproc)hot_traverse,
    .tp_clear = (inquiry)hot_clear,
    .tp_doc = "rec.launch's inline path for one stream (recorder/_hot.py: make_hot)",
    .tp_methods = hot_methods,
};

/* ----------------------------------------------------------------------------------------------- Bound */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *hot, *kernel, *opcode, *words, *stream, *outputs;
} Bound;

static int bound_traverse(Bound *b, visitproc visit, void *arg) {
    Py_VISIT(b->hot);
    Py_VISIT(b->kernel);
    Py_VISIT(b->opcode);
    Py_VISIT(b->words);
    Py_VISIT(b->stream);
    Py_VISIT(b->outputs);
    return 0;
}

static int bound_clear(Bound *b) {
    Py_CLEAR(b->hot);
    Py_CLEAR(b->kernel);
    Py_CLEAR(b->opcode);
    Py_CLEAR(b->words);
    Py_CLEAR(b->stream);
    Py_CLEAR(b->outputs);
    return 0;
}

static void bound_dealloc(Bound *b) {
    PyObject_GC_UnTrack(b);
    bound_clear(b);
    Py_TYPE(b)->tp_free((PyObject *)b);
}

static PyObject *bound_vectorcall(PyObject *self, PyObject *const *a, size_t nargsf, PyObject *kwnames) {
    Bound *b = (Bound *)self;
    Py_ssize_t n = PyVectorcall_NARGS(nargsf), nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *shm = zero_int;
    if (n == 4 && nk == 0) {
        shm = a[3];
    } else if (n == 3 && nk == 1 && PyUnicode_Compare(PyTuple_GET_ITEM(kwnames, 0), s_shared_mem) == 0) {
        shm = a[3];
    } else if (!(n == 3 && nk == 0)) {
        PyErr_SetString(PyExc_TypeError, "launcher(grid, block, args, shared_mem=0)");
        return NULL;
    }
    PyObject *args[9] = {b->kernel, a[0], a[1], a[2], b->opcode, b->words, b->stream, shm, b->outputs};
    /* The words were checked when the launcher was made (rec.launcher), as `body` takes them in Python. */
    return hot_run((Hot *)b->hot, args, 1);
}

static PyObject *bound_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *hot, *kernel, *opcode, *words, *stream, *outputs;
    if (!PyArg_ParseTuple(args, "O!OOOOO", &HotType, &hot, &kernel, &opcode, &words, &stream, &outputs)) return NULL;
    Bound *b = (Bound *)type->tp_alloc(type, 0);
    if (b == NULL) return NULL;
    b->vectorcall = bound_vectorcall;
#define SET(f) Py_INCREF(f); b->f = f;
    SET(hot) SET(kernel) SET(opcode) SET(words) SET(stream) SET(outputs)
#undef SET
    return (PyObject *)b;
}

static PyTypeObject BoundType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "vrrl_gpu.recorder._vrrl_fast.Bound",
    .tp_basicsize = sizeof(Bound),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Bound, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = bound_new,
    .tp_dealloc = (destructor)bound_dealloc,
    .tp_traverse = (traverseproc)bound_traverse,
    .tp_clear = (inquiry)bound_clear,
    .tp_doc = "rec.launcher's launcher(grid, block, args, shared_mem=0) (recorder/_hot.py: make_launcher)",
};

static PyObject *s_hot, *s_opcode, *s_words, *s_outputs;

/* ---------------------------------------------------------------------------------------------- Launch */

/* `rec.launch` itself (Recorder.launch): a known stream object's state with an inline path takes it, C to C;
 * everything else (and any call shape but the documented one) is the Python method, which does the same. */

/* The last stream object seen and its inline path: a weak reference to the stream (alive and the same
 * object: the same state, whose inline path is `hot`) and `hot`. A state retired while its stream lives
 * clears its fast cell (StreamTable.sweep), and so does a capture, so a kept `hot` that is not fast is looked
 * up again; a stream that died leaves a dead reference, never equal to a live object. */
typedef struct {
    PyObject *ref, *hot;
} HotCache;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *by_id, *general;
    HotCache cache;
} Launch;


static int launch_traverse(Launch *l, visitproc visit, void *arg) {
    Py_VISIT(l->by_id);
    Py_VISIT(l->general);
    Py_VISIT(l->cache.ref);
    Py_VISIT(l->cache.hot);
    return 0;
}

static int launch_clear(Launch *l) {
    Py_CLEAR(l->by_id);
    Py_CLEAR(l->general);
    Py_CLEAR(l->cache.ref);
    Py_CLEAR(l->cache.hot);
    return 0;
}

static void launch_dealloc(Launch *l) {
    PyObject_GC_UnTrack(l);
    launch_clear(l);
    Py_TYPE(l)->tp_free((PyObject *)l);
}

static PyTypeObject HotType;
static PyObject *hot_of(PyObject *by_id, PyObject *stream, HotCache *cache);

static PyObject *launch_vectorcall(PyObject *self, PyObject *const *a, size_t nargsf, PyObject *kwnames) {
    Launch *l = (Launch *)self;
    Py_ssize_t n = PyVectorcall_NARGS(nargsf), nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *opcode = NULL, *words = Py_None, *stream = Py_None, *shm = zero_int, *outputs = Py_None;
    int plain = n == 4;
    for (Py_ssize_t i = 0; plain && i < nk; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i), *v = a[n + i];
        /* Keyword names from a call site are interned: pointers first, then by value. */
        if (k == s_opcode) opcode = v;
        else if (k == s_stream) stream = v;
        else if (k == s_words) words = v;
        else if (k == s_shared_mem) shm = v;
        else if (k == s_outputs) outputs = v;
        else if (PyUnicode_Compare(k, s_opcode) == 0) opcode = v;
        else if (PyUnicode_Compare(k, s_stream) == 0) stream = v;
        else if (PyUnicode_Compare(k, s_words) == 0) words = v;
        else if (PyUnicode_Compare(k, s_shared_mem) == 0) shm = v;
        else if (PyUnicode_Compare(k, s_outputs) == 0) outputs = v;
        else plain = 0;
        if (PyErr_Occurred()) return NULL;
    }
    if (plain && opcode != NULL) {
        PyObject *hot = hot_of(l->by_id, stream, &l->cache);
        if (hot == NULL && PyErr_Occurred()) return NULL;
        if (hot != NULL) {
            PyObject *args[9] = {a[0], a[1], a[2], a[3], opcode, words, stream, shm, outputs};
            PyObject *r = hot_run((Hot *)hot, args, 0);
            Py_DECREF(hot);
            return r;
        }
    }
    return PyObject_Vectorcall(l->general, a, nargsf, kwnames);
}

/* The C inline path of a known stream object (a new reference), or NULL: none (no exception set) or an
 * exception. `cache`: the last one found (see HotCache). */
static PyObject *hot_of(PyObject *by_id, PyObject *stream, HotCache *cache) {
    if (stream == Py_None) return NULL;  /* the current stream: a query, the Python method's */
    if (cache->hot != NULL && remembered(cache->ref, ((Hot *)cache->hot)->st_cells, stream)) {
        Py_INCREF(cache->hot);
        return cache->hot;
    }
    PyObject *key = PyLong_FromVoidPtr(stream);
    if (key == NULL) return NULL;
    PyObject *st = PyDict_GetItemWithError(by_id, key);  /* borrowed */
    Py_DECREF(key);
    if (st == NULL) return NULL;
    /* st.hot from the instance dict (a dataclass field: always there, never a descriptor). */
    PyObject **dp = _PyObject_GetDictPtr(st);
    PyObject *hot = dp != NULL && *dp != NULL ? PyDict_GetItemWithError(*dp, s_hot) : NULL;
    if (hot == NULL || Py_TYPE(hot) != &HotType) return NULL;
    Py_INCREF(hot);
    if (PyType_SUPPORTS_WEAKREFS(Py_TYPE(stream))) {
        PyObject *ref = PyWeakref_NewRef(stream, NULL);  /* the object's shared plain reference, if any */
        if (ref == NULL) {
            Py_DECREF(hot);
            return NULL;
        }
        Py_XSETREF(cache->ref, ref);
        Py_INCREF(hot);
        Py_XSETREF(cache->hot, hot);
    }
    return hot;
}

static PyObject *launch_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *by_id, *general;
    if (!PyArg_ParseTuple(args, "O!O", &PyDict_Type, &by_id, &general)) return NULL;
    Launch *l = (Launch *)type->tp_alloc(type, 0);
    if (l == NULL) return NULL;
    l->vectorcall = launch_vectorcall;
    Py_INCREF(by_id);
    l->by_id = by_id;
    Py_INCREF(general);
    l->general = general;
    return (PyObject *)l;
}

static PyTypeObject LaunchType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "vrrl_gpu.recorder._vrrl_fast.Launch",
    .tp_basicsize = sizeof(Launch),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Launch, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = launch_new,
    .tp_dealloc = (destructor)launch_dealloc,
    .tp_traverse = (traverseproc)launch_traverse,
    .tp_clear = (inquiry)launch_clear,
    .tp_doc = "Recorder.launch for one recorder (the Python method for everything but a known stream)",
};

/* ------------------------------------------------------------------------------------------------ Slot */

/* `rec.slot(...)` on a known stream without outputs (recorder/_hot.py: HotSlot): the begin and end
 * breadcrumbs by the stream's inline path, or the general `_Slot` (made by `general_slot`) when the inline
 * route does not apply at `__enter__`. */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;  /* slot_call: the slot is its own bound __enter__ and __exit__ (see SlotHook) */
    Hot *hot;
    PyObject *opcode, *words, *stream, *general;
    Claim c;  /* the inline slot, while entered */
    PyObject *w;
} Slot;

static PyObject *slot_call(PyObject *self, PyObject *const *a, size_t nargsf, PyObject *kwnames);

static PyTypeObject SlotType;

static int slot_traverse(Slot *x, visitproc visit, void *arg) {
    Py_VISIT(x->hot);
    Py_VISIT(x->opcode);
    Py_VISIT(x->words);
    Py_VISIT(x->stream);
    Py_VISIT(x->general);
    Py_VISIT(x->w);
    return 0;
}

static int slot_clear(Slot *x) {
    Py_CLEAR(x->hot);
    Py_CLEAR(x->opcode);
    Py_CLEAR(x->words);
    Py_CLEAR(x->stream);
    Py_CLEAR(x->general);
    Py_CLEAR(x->w);
    claim_clear(&x->c);
    return 0;
}

/* A slot lives for one `with` block: a few freed ones are kept for the next (as CPython keeps freed tuples
 * and frames), cleared first, so no reference outlives the slot (a stream dies when its last user lets go). */
#define SLOT_SPARES 4
static Slot *slot_spares[SLOT_SPARES];
static int slot_nspares;

static void slot_dealloc(Slot *x) {
    PyObject_GC_UnTrack(x);
    slot_clear(x);
    if (slot_nspares < SLOT_SPARES) slot_spares[slot_nspares++] = x;
    else PyObject_GC_Del(x);
}

static PyObject *slot_make(Hot *h, PyObject *opcode, PyObject *words, PyObject *stream) {
    Slot *x = (Slot *)h->idle;
    if (x != NULL) {
        /* The slot parked by this stream's last `with` (slot_park): cleared, still tracked, its one
         * reference now ours. */
        h->idle = NULL;
    } else {
        if (slot_nspares > 0) {
            x = slot_spares[--slot_nspares];
            (void)PyObject_Init((PyObject *)x, &SlotType);
        } else {
            x = PyObject_GC_New(Slot, &SlotType);
            if (x == NULL) return NULL;
        }
        x->vectorcall = slot_call;
        x->general = NULL;
        x->w = NULL;
        x->c = (Claim){NULL, NULL, NULL, NULL, 0};
        PyObject_GC_Track(x);
    }
    x->hot = (Hot *)Py_NewRef(h);
    x->opcode = Py_NewRef(opcode);
    x->words = Py_NewRef(words);
    x->stream = Py_NewRef(stream);
    return (PyObject *)x;
}

/* After a `with` block's exit: a slot nobody else holds (`Py_REFCNT` 1: the reference the exit call is
 * made through) is cleared and parked on its stream's Hot for the next `rec.slot` there, so a slot per
 * block costs no allocation, initialisation or deallocation. Only the `with` statement's own call parks:
 * `Slot.__exit__(x, ...)` from other code (contextlib.ExitStack) may hold a reference it did not count. */
static void slot_park(Slot *x) {
    Hot *h = x->hot;
    if (Py_REFCNT(x) != 1 || h == NULL || h->idle != NULL || x->general != NULL || x->w != NULL ||
        x->c.slot != NULL)
        return;
    h->idle = Py_NewRef((PyObject *)x);
    Py_CLEAR(x->opcode);
    Py_CLEAR(x->words);
    Py_CLEAR(x->stream);
    Py_CLEAR(x->hot);  /* last: it may free h, whose clear lets go of x again (the caller's reference stays) */
}

static PyObject *slot_enter(Slot *x, PyObject *unused) {
    Hot *h = x->hot;
    PyObject *w = hot_words(h, x->words);
    if (w == NULL) return NULL;
    Py_CLEAR(x->general);
    Py_CLEAR(x->w);
    claim_clear(&x->c);
    PyObject *captured;
    if (hot_lock(h) < 0) {
        Py_DECREF(w);
        return NULL;
    }
    int got = hot_claim(h, x->opcode, w, x->stream, 0, Py_None, &x->c, &captured);
    PyObject *r = hot_unlock(h, got < 0 ? NULL : Py_NewRef(Py_None));
    if (r == NULL) got = -1;
    else Py_DECREF(r);
    if (got < 0) {
        claim_clear(&x->c);
        Py_DECREF(w);
        return NULL;
    }
    if (got == 0) {
        PyObject *gargs[4] = {NULL, x->opcode, w, x->stream};
        x->general = PyObject_Vectorcall(h->general_slot, gargs + 1, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        Py_DECREF(w);
        if (x->general == NULL) return NULL;
        return PyObject_CallMethod(x->general, "__enter__", NULL);
    }
    x->w = w;
    Py_INCREF(x->c.slot);
    return x->c.slot;
}

/* The inline slot's end breadcrumb, with the lock held (`slot_end` in recorder/_hot.py). */
static PyObject *slot_end_locked(Slot *x) {
    Hot *h = x->hot;
    Claim *c = &x->c;
    int t = cell_true(h->st_cells, ST_FAST);
    if (t > 0) t = cell_true(h->rec_cells, REC_USABLE);
    if (t < 0) return NULL;
    long long seq = cell_ll(h->st_cells, ST_NEXT_SEQ), limit = cell_ll(h->st_cells, ST_LIMIT);
    if (t && (seq < 0 || limit < 0)) t = 0;
    PyObject *s = NULL, *res = NULL;
    if (t && seq >= limit) {
        s = PyLong_FromLongLong(seq);
        if (s == NULL) return NULL;
        PyObject *r = PyObject_Vectorcall(h->room, &s, 1, NULL);
        if (r == NULL) goto done;
        t = PyObject_IsTrue(r);
        Py_DECREF(r);
        if (t < 0) goto done;
    }
    if (!t) {
        PyObject *eargs[6] = {NULL, c->slot, x->opcode, x->w, c->epoch, c->seq};
        res = PyObject_Vectorcall(h->slow_end, eargs + 1, 5 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        goto done;
    }
    if (s == NULL) s = Py_NewRef(PyList_GET_ITEM(h->st_cells, ST_NEXT_SEQ));  /* the exact int `seq`, just read */
    {
        PyObject *pargs[7] = {NULL, s, c->slot, x->opcode, x->w, c->epoch, h->completed};
        PyObject *r = call_pack(h->pack, pargs + 1);
        if (r == NULL) {
            PyObject *fargs[2] = {NULL, NULL};
            fail_with(h->pack_failed, fargs, 1);
            goto done;
        }
        Py_DECREF(r);
    }
    if (store_entry(h->window, seq & h->wmask, s, c->slot, x->opcode, x->w, c->epoch, Py_None, c->seq) < 0 ||
        cell_set_ll(h->st_cells, ST_NEXT_SEQ, seq + 1) < 0)
        goto done;
    *(uint64_t *)h->produced.buf = (uint64_t)(seq + 1);
    res = Py_None;
    Py_INCREF(res);
done:
    Py_XDECREF(s);
    return res;
}

static PyObject *slot_exit(Slot *x, PyObject *const *a, Py_ssize_t n) {
    if (n != 3) {
        PyErr_SetString(PyExc_TypeError, "__exit__(exc_type, exc, tb)");
        return NULL;
    }
    if (x->general != NULL) return PyObject_CallMethod(x->general, "__exit__", "OOO", a[0], a[1], a[2]);
    if (x->c.slot == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the slot was not entered");
        return NULL;
    }
    Hot *h = x->hot;
    PyObject *exc = a[1];
    if (exc == Py_None && !h->end) {
        claim_clear(&x->c);
        Py_CLEAR(x->w);
        Py_RETURN_NONE;
    }
    if (hot_lock(h) < 0) return NULL;
    PyObject *res;
    if (exc != Py_None) {
        /* The body may have enqueued work before it raised: a fault the device met after the slot's begin is
         * the slot's own (FAULTED), not a failure of the call (launched=True). */
        PyObject *fargs[9] = {NULL, exc, x->c.slot, x->opcode, x->w, x->c.epoch, x->c.seq, Py_None, Py_True};
        res = PyObject_Vectorcall(h->launch_failed, fargs + 1, 8 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    } else {
        res = slot_end_locked(x);
    }
    res = hot_unlock(h, res);
    claim_clear(&x->c);
    Py_CLEAR(x->w);
    if (res == NULL) return NULL;
    Py_DECREF(res);
    Py_RETURN_NONE;  /* never suppresses the body's exception */
}

/* `with` looks `__enter__` and `__exit__` up on the type and binds each to the slot: two method objects
 * made and freed per slot, about a bare Python call of work (callgrind). Instead the type's `__enter__` and
 * `__exit__` are SlotHooks, descriptors that bind to the slot itself, and calling a slot with no arguments
 * enters it, with three exits it. `Slot.__enter__(x)` and `Slot.__exit__(x, t, v, tb)` (what
 * contextlib.ExitStack calls) are the hooks' own calls. */
static PyObject *slot_call(PyObject *self, PyObject *const *a, size_t nargsf, PyObject *kwnames) {
    Py_ssize_t n = PyVectorcall_NARGS(nargsf);
    if (kwnames == NULL || PyTuple_GET_SIZE(kwnames) == 0) {
        if (n == 0) return slot_enter((Slot *)self, NULL);
        if (n == 3) {
            PyObject *r = slot_exit((Slot *)self, a, 3);
            if (r != NULL) slot_park((Slot *)self);
            return r;
        }
    }
    PyErr_SetString(PyExc_TypeError, "a slot is called as its __enter__() or __exit__(exc_type, exc, tb) only");
    return NULL;
}

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    int exit;
} SlotHook;

static PyObject *hook_call(PyObject *self, PyObject *const *a, size_t nargsf, PyObject *kwnames) {
    int exit = ((SlotHook *)self)->exit;
    Py_ssize_t n = PyVectorcall_NARGS(nargsf);
    if ((kwnames != NULL && PyTuple_GET_SIZE(kwnames)) || n != (exit ? 4 : 1) || Py_TYPE(a[0]) != &SlotType) {
        PyErr_SetString(PyExc_TypeError, exit ? "Slot.__exit__(slot, exc_type, exc, tb)" : "Slot.__enter__(slot)");
        return NULL;
    }
    return exit ? slot_exit((Slot *)a[0], a + 1, 3) : slot_enter((Slot *)a[0], NULL);
}

static PyObject *hook_get(PyObject *self, PyObject *obj, PyObject *type) {
    return Py_NewRef(obj == NULL || obj == Py_None ? self : obj);
}

static PyTypeObject SlotHookType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "vrrl_gpu.recorder._vrrl_fast.SlotHook",
    .tp_basicsize = sizeof(SlotHook),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(SlotHook, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_descr_get = hook_get,
    .tp_doc = "Slot.__enter__ / Slot.__exit__: bound to a slot, the slot itself",
};

static SlotHook enter_hook = {PyObject_HEAD_INIT(&SlotHookType) hook_call, 0};
static SlotHook exit_hook = {PyObject_HEAD_INIT(&SlotHookType) hook_call, 1};

static PyTypeObject SlotType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "vrrl_gpu.recorder._vrrl_fast.Slot",
    .tp_basicsize = sizeof(Slot),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Slot, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_dealloc = (destructor)slot_dealloc,
    .tp_traverse = (traverseproc)slot_traverse,
    .tp_clear = (inquiry)slot_clear,
    .tp_doc = "rec.slot(...) on a known stream (recorder/_hot.py: HotSlot)",
};

/* Hot.slot(opcode, words, stream): what Recorder.slot returns for a known stream without outputs. */
static PyObject *hot_slot_method(Hot *h, PyObject *const *a, Py_ssize_t n) {
    if (n != 3) {
        PyErr_SetString(PyExc_TypeError, "slot(opcode, words, stream)");
        return NULL;
    }
    return slot_make(h, a[0], a[1], a[2]);
}

/* `rec.slot` itself: `(opcode, words=None, *, stream=None, outputs=None)`; a known stream object with an
 * inline path and no outputs makes a Slot here, everything else is the Python method (`general`). */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *by_id, *general;
    HotCache cache;
} SlotEntry;

static PyObject *entry_vectorcall(PyObject *self, PyObject *const *a, size_t nargsf, PyObject *kwnames) {
    SlotEntry *e = (SlotEntry *)self;
    Py_ssize_t n = PyVectorcall_NARGS(nargsf), nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *words = n == 2 ? a[1] : Py_None, *stream = Py_None, *outputs = Py_None;
    int plain = n == 1 || n == 2;
    for (Py_ssize_t i = 0; plain && i < nk; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i), *v = a[n + i];
        if (k == s_stream || PyUnicode_Compare(k, s_stream) == 0) stream = v;
        else if (n == 1 && (k == s_words || PyUnicode_Compare(k, s_words) == 0)) words = v;
        else if (k == s_outputs || PyUnicode_Compare(k, s_outputs) == 0) outputs = v;
        else plain = 0;
        if (PyErr_Occurred()) return NULL;
    }
    if (plain && outputs == Py_None) {
        PyObject *hot = hot_of(e->by_id, stream, &e->cache);
        if (hot == NULL && PyErr_Occurred()) return NULL;
        if (hot != NULL) {
            PyObject *r = slot_make((Hot *)hot, a[0], words, stream);
            Py_DECREF(hot);
            return r;
        }
    }
    return PyObject_Vectorcall(e->general, a, nargsf, kwnames);
}

static int entry_traverse(SlotEntry *e, visitproc visit, void *arg) {
    Py_VISIT(e->by_id);
    Py_VISIT(e->general);
    Py_VISIT(e->cache.ref);
    Py_VISIT(e->cache.hot);
    return 0;
}

static int entry_clear(SlotEntry *e) {
    Py_CLEAR(e->by_id);
    Py_CLEAR(e->general);
    Py_CLEAR(e->cache.ref);
    Py_CLEAR(e->cache.hot);
    return 0;
}

static void entry_dealloc(SlotEntry *e) {
    PyObject_GC_UnTrack(e);
    entry_clear(e);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

static PyObject *entry_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *by_id, *general;
    if (!PyArg_ParseTuple(args, "O!O", &PyDict_Type, &by_id, &general)) return NULL;
    SlotEntry *e = (SlotEntry *)type->tp_alloc(type, 0);
    if (e == NULL) return NULL;
    e->vectorcall = entry_vectorcall;
    Py_INCREF(by_id);
    e->by_id = by_id;
    Py_INCREF(general);
    e->general = general;
    return (PyObject *)e;
}

static PyTypeObject SlotEntryType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "vrrl_gpu.recorder._vrrl_fast.SlotEntry",
    .tp_basicsize = sizeof(SlotEntry),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(SlotEntry, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = entry_new,
    .tp_dealloc = (destructor)entry_dealloc,
    .tp_traverse = (traverseproc)entry_traverse,
    .tp_clear = (inquiry)entry_clear,
    .tp_doc = "Recorder.slot for one recorder (the Python method for everything but a known stream)",
};

/* ----------------------------------------------------------------------------------------------- Instr */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *rec_cells, *rec_dict, *by_id, *bound, *words, *wfn, *slots, *first, *failed, *words_fn, *coop;
    /* `key`: the last stream's by_id key (its id), made again only for another stream; `spare`: the last
     * call's `varying` tuple when nobody else kept it (the backend let it go), refilled by the next call;
     * `ref`, `st`, `cells`: the last stream seen (a weak reference), its state and the state's cells, used
     * while the stream is that object and the state is fast (retired and capturing states are not: see
     * HotCache), so a call on the same stream needs no look-up. */
    PyObject *key, *spare, *ref, *st, *cells;
    long long mask;
} Instr;

#define INSTR_FIELDS(X)                                                                                      \
    X(rec_cells) X(rec_dict) X(by_id) X(bound) X(words) X(wfn) X(slots) X(first) X(failed) X(words_fn) X(coop) \
    X(key) X(spare) X(ref) X(st) X(cells)

static int instr_traverse(Instr *x, visitproc visit, void *arg) {
#define V(f) Py_VISIT(x->f);
    INSTR_FIELDS(V)
#undef V
    return 0;
}

static int instr_clear(Instr *x) {
#define C(f) Py_CLEAR(x->f);
    INSTR_FIELDS(C)
#undef C
    return 0;
}

static void instr_dealloc(Instr *x) {
    PyObject_GC_UnTrack(x);
    instr_clear(x);
    Py_TYPE(x)->tp_free((PyObject *)x);
}

static PyObject *instr_vectorcall(PyObject *self, PyObject *const *a, size_t nargsf, PyObject *kwnames) {
    Instr *x = (Instr *)self;
    Py_ssize_t n = PyVectorcall_NARGS(nargsf), nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (n != 3) {
        PyErr_SetString(PyExc_TypeError, "expected (grid, block, args, *, shared_mem=0, stream=None)");
        return NULL;
    }
    PyObject *shm = zero_int, *stream = Py_None, *coop = Py_False;
    for (Py_ssize_t i = 0; i < nk; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i);
        /* Keyword names from a call site are interned: pointers first, then by value. */
        if (k == s_stream) stream = a[3 + i];
        else if (k == s_shared_mem) shm = a[3 + i];
        else if (PyUnicode_Compare(k, s_stream) == 0) stream = a[3 + i];
        else if (PyUnicode_Compare(k, s_shared_mem) == 0) shm = a[3 + i];
        else if (PyUnicode_Compare(k, s_coop) == 0) coop = a[3 + i];
        else {
            PyErr_Format(PyExc_TypeError, "unexpected keyword argument %R", k);
            return NULL;
        }
    }
    int t = coop == Py_False ? 0 : PyObject_IsTrue(coop);
    if (t < 0) return NULL;
    if (t) {
        PyObject *err = call0(x->coop);  /* the same error the Python reference raises */
        if (err == NULL) return NULL;
        PyErr_SetObject((PyObject *)Py_TYPE(err), err);
        Py_DECREF(err);
        return NULL;
    }
    PyObject *w;
    if (x->words != Py_None) {
        w = x->words;
        Py_INCREF(w);
    } else {
        PyObject *tup = PySequence_Tuple(a[2]);
        if (tup == NULL) return NULL;
        PyObject *raw = PyObject_Vectorcall(x->wfn, &tup, 1, NULL);
        Py_DECREF(tup);
        if (raw == NULL) return NULL;
        w = PyObject_Vectorcall(x->words_fn, &raw, 1, NULL);
        Py_DECREF(raw);
        if (w == NULL) return NULL;
    }
    PyObject *st = NULL, *res = NULL, *slot = NULL, *varying = NULL, *epoch = NULL;
    Py_INCREF(stream);
    int cached = stream != Py_None && x->st != NULL && remembered(x->ref, x->cells, stream);
    if (cached) {
        st = Py_NewRef(x->st);
    } else {
        /* id(stream): the key kept from the last call while the stream is at the same address. */
        if (x->key == NULL || PyLong_AsVoidPtr(x->key) != (void *)stream) {
            PyObject *key = PyLong_FromVoidPtr(stream);
            if (key == NULL) goto done;
            Py_XSETREF(x->key, key);
        }
        st = PyDict_GetItemWithError(x->by_id, x->key);
        if (st == NULL && PyErr_Occurred()) goto done;
        Py_XINCREF(st);
    }
    t = cell_true(x->rec_cells, REC_USABLE);
    if (t < 0) goto done;
    if (st == NULL || !t) {
        Py_XDECREF(st);
        st = PyObject_Vectorcall(x->first, &stream, 1, NULL);  /* the state, under the lock, or raises */
        if (st == NULL) goto done;
        PyObject *s = PyObject_GetAttr(st, s_stream);
        if (s == NULL) goto done;
        Py_DECREF(stream);
        stream = s;
    }
    slot = PyIter_Next(x->slots);
    if (slot == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "the slot counter ended");
        goto done;
    }
    {
        int overflow = 0;
        long long v = PyLong_CheckExact(slot) ? PyLong_AsLongLongAndOverflow(slot, &overflow) : -1;
        PyObject *masked;
        if (v >= 0 && !overflow) {
            masked = PyLong_FromLongLong(v & x->mask);
        } else {  /* past a long long, or not an exact int: Python's & */
            PyErr_Clear();
            PyObject *m = PyLong_FromLongLong(x->mask);
            masked = m == NULL ? NULL : PyNumber_And(slot, m);
            Py_XDECREF(m);
        }
        Py_DECREF(slot);
        slot = masked;
        if (slot == NULL) goto done;
    }
    epoch = PyList_GET_ITEM(x->rec_cells, REC_EPOCH);
    Py_INCREF(epoch);
    {
        PyObject *items = PySequence_Fast(w, "words");
        if (items == NULL) goto done;
        Py_ssize_t nw = PySequence_Fast_GET_SIZE(items);
        /* The spare is ours alone (refcount 1, checked when it was kept): refilled in place, as zip() does. */
        if (x->spare != NULL && PyTuple_GET_SIZE(x->spare) == nw + 2) {
            varying = x->spare;
            x->spare = NULL;
            cell_put_tuple(varying, 0, Py_NewRef(slot));
            for (Py_ssize_t i = 0; i < nw; i++) cell_put_tuple(varying, 1 + i, Py_NewRef(PySequence_Fast_GET_ITEM(items, i)));
            cell_put_tuple(varying, nw + 1, Py_NewRef(epoch));
        } else {
            varying = PyTuple_New(nw + 2);
            if (varying == NULL) {
                Py_DECREF(items);
                goto done;
            }
            PyTuple_SET_ITEM(varying, 0, Py_NewRef(slot));
            for (Py_ssize_t i = 0; i < nw; i++) PyTuple_SET_ITEM(varying, 1 + i, Py_NewRef(PySequence_Fast_GET_ITEM(items, i)));
            PyTuple_SET_ITEM(varying, nw + 1, Py_NewRef(epoch));
        }
        Py_DECREF(items);
    }
    {
        PyObject *bargs[7] = {NULL, a[0], a[1], a[2], varying, stream, shm};
        PyObject *r = PyObject_Vectorcall(x->bound, bargs + 1, 6 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        if (r == NULL) {
            PyObject *fargs[5] = {NULL, st, w, epoch, NULL};
            fail_with(x->failed, fargs, 4);
            goto done;
        }
        Py_DECREF(r);
    }
    if (cached && st == x->st) {
        cell_put(x->cells, ST_OUTSTANDING, Py_NewRef(Py_False));
    } else {
        /* st.cells from the instance dict (a dataclass field: always there, never a descriptor). */
        PyObject **dp = _PyObject_GetDictPtr(st);
        PyObject *cells = dp != NULL && *dp != NULL ? PyDict_GetItemWithError(*dp, s_cells) : NULL;
        if (cells != NULL) Py_INCREF(cells);
        else if (PyErr_Occurred() || (cells = PyObject_GetAttr(st, s_cells)) == NULL) goto done;
        int bad = !PyList_CheckExact(cells) || PyList_GET_SIZE(cells) != ST_CELLS;
        if (bad) PyErr_SetString(PyExc_ValueError, "unexpected cells");
        else bad = cell_set(cells, ST_OUTSTANDING, Py_False) < 0;
        /* Remembered for the next call on this stream object: a fast state found by the look-up. */
        if (!bad && !cached && stream != Py_None && PyList_GET_ITEM(cells, ST_FAST) == Py_True &&
            PyType_SUPPORTS_WEAKREFS(Py_TYPE(stream))) {
            PyObject *ref = PyWeakref_NewRef(stream, NULL);
            if (ref == NULL) bad = 1;
            else {
                Py_XSETREF(x->ref, ref);
                Py_XSETREF(x->st, Py_NewRef(st));
                Py_XSETREF(x->cells, Py_NewRef(cells));
            }
        }
        Py_DECREF(cells);
        if (bad) goto done;
    }
    {
        PyObject *was = PyDict_GetItemWithError(x->rec_dict, s_instr_outstanding);  /* borrowed */
        if (was == NULL && PyErr_Occurred()) goto done;
        if (was != Py_True && PyDict_SetItem(x->rec_dict, s_instr_outstanding, Py_True) < 0) goto done;
    }
    res = Py_None;
    Py_INCREF(res);
done:
    Py_XDECREF(st);
    Py_XDECREF(slot);
    /* Kept for the next call only when the backend kept no reference to it. */
    if (varying != NULL && Py_REFCNT(varying) == 1 && x->spare == NULL) x->spare = varying;
    else Py_XDECREF(varying);
    Py_XDECREF(epoch);
    Py_DECREF(stream);
    Py_DECREF(w);
    return res;
}

static PyObject *instr_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *rec_cells, *rec_dict, *by_id, *bound, *words, *wfn, *slots, *first, *failed, *words_fn, *coop;
    long long mask;
    if (!PyArg_ParseTuple(args, "O!O!O!OOOOLOOOO", &PyList_Type, &rec_cells, &PyDict_Type, &rec_dict, &PyDict_Type,
                          &by_id, &bound, &words, &wfn, &slots, &mask, &first, &failed, &words_fn, &coop))
        return NULL;
    if (PyList_GET_SIZE(rec_cells) != REC_CELLS) {
        PyErr_SetString(PyExc_ValueError, "unexpected cells");
        return NULL;
    }
    Instr *x = (Instr *)type->tp_alloc(type, 0);
    if (x == NULL) return NULL;
    x->vectorcall = instr_vectorcall;
#define SET(f) Py_INCREF(f); x->f = f;
    SET(rec_cells) SET(rec_dict) SET(by_id) SET(bound) SET(words) SET(wfn) SET(slots) SET(first) SET(failed) SET(words_fn)
    SET(coop)
#undef SET
    x->mask = mask;
    return (PyObject *)x;
}

static PyMemberDef instr_members[] = {
    {"bound", T_OBJECT_EX, offsetof(Instr, bound), READONLY, "the backend's bound launcher (benchmarks)"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject InstrType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "vrrl_gpu.recorder._vrrl_fast.Instr",
    .tp_basicsize = sizeof(Instr),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Instr, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = instr_new,
    .tp_dealloc = (destructor)instr_dealloc,
    .tp_traverse = (traverseproc)instr_traverse,
    .tp_clear = (inquiry)instr_clear,
    .tp_doc = "an instrumented kernel's call (recorder/_hot.py: make_instr)",
    .tp_members = instr_members,
};

/* ------------------------------------------------------------------------------------------------ module */

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_vrrl_fast", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__vrrl_fast(void) {
#define INTERN(v, s) if ((v = PyUnicode_InternFromString(s)) == NULL) return NULL;
    INTERN(s_cells, "cells") INTERN(s_hot, "hot") INTERN(s_opcode, "opcode")
    INTERN(s_words, "words") INTERN(s_outputs, "outputs") INTERN(s_instr_outstanding, "_instr_outstanding") INTERN(s_shared_mem, "shared_mem")
    INTERN(s_stream, "stream") INTERN(s_coop, "enable_cooperative_groups")
#undef INTERN
    if ((kw_launch = PyTuple_Pack(2, s_stream, s_shared_mem)) == NULL) return NULL;
    if ((kw_stream = PyTuple_Pack(1, s_stream)) == NULL) return NULL;
    if ((zero_int = PyLong_FromLong(0)) == NULL) return NULL;
    if (PyType_Ready(&HotType) < 0 || PyType_Ready(&BoundType) < 0 || PyType_Ready(&InstrType) < 0 ||
        PyType_Ready(&LaunchType) < 0 || PyType_Ready(&RLockType) < 0 || PyType_Ready(&SlotType) < 0 ||
        PyType_Ready(&SlotEntryType) < 0 || PyType_Ready(&SlotHookType) < 0)
        return NULL;
    /* A static type's attributes are set once, here, before any instance exists. */
    if (PyDict_SetItemString(SlotType.tp_dict, "__enter__", (PyObject *)&enter_hook) < 0 ||
        PyDict_SetItemString(SlotType.tp_dict, "__exit__", (PyObject *)&exit_hook) < 0)
        return NULL;
    PyType_Modified(&SlotType);
    PyObject *m = PyModule_Create(&moddef);
    if (m == NULL) return NULL;
    Py_INCREF(&HotType);
    Py_INCREF(&BoundType);
    Py_INCREF(&InstrType);
    Py_INCREF(&LaunchType);
    Py_INCREF(&SlotEntryType);
    Py_INCREF(&RLockType);
    Py_INCREF(&SlotType);
    if (PyModule_AddObject(m, "Launch", (PyObject *)&LaunchType) < 0 ||
        PyModule_AddObject(m, "RLock", (PyObject *)&RLockType) < 0 ||
        PyModule_AddObject(m, "Hot", (PyObject *)&HotType) < 0 ||
        PyModule_AddObject(m, "Bound", (PyObject *)&BoundType) < 0 ||
        PyModule_AddObject(m, "Instr", (PyObject *)&InstrType) < 0 ||
        PyModule_AddObject(m, "Slot", (PyObject *)&SlotType) < 0 ||
        PyModule_AddObject(m, "SlotEntry", (PyObject *)&SlotEntryType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
