/* The text formats' C renderer: the ops a Lines recorded, formatted straight from the columns into one
 * output buffer (see _text.py, whose numpy engine gives the same bytes; _text_accel.py builds this file).
 *
 * render(n, ops) -> bytearray. Each op is a tuple; the columns are numpy arrays read through the buffer
 * protocol (strided 1-D integer columns, so a structured array's field is read in place; C-contiguous 2-D
 * uint8 matrices). The buffer is sized for the widest text of every op on every row, filled, then shrunk:
 * no per-row Python object, no intermediate matrix. Bad input (a dtype, a shape, an index) raises
 * TypeError, ValueError or IndexError; it never reads out of bounds.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum { OP_LIT = 0, OP_UINT = 1, OP_FIXED = 2, OP_HEX = 3, OP_PICK = 4, OP_PART = 5 };

/* An integer column: row i's value is at p + i * stride, size bytes, signed or not. */
typedef struct {
    const char *p;
    Py_ssize_t stride;
    int size;
    int sign;
} Col;

typedef struct {
    int kind;
    Col v;          /* uint, fixed, hex: the values; pick: the indexes */
    Col null;       /* uint, hex: the null mask (p NULL: none) */
    const char *text; /* lit: its bytes; uint, hex: the null text (no NUL: _text.py strips them) */
    Py_ssize_t text_len;
    Py_ssize_t width; /* fixed: digits; hex: digits, -1 for the fewest */
    const unsigned char *mat; /* pick: the table; part: the matrix */
    Py_ssize_t w, rows;
    Col lens;       /* pick: the texts' lengths; part: the rows' (p NULL: padded) */
    Py_ssize_t bound; /* the most bytes this op writes on a row */
} Op;

#define MAX_BUFFERS 4

static const char DIG2[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";
static const char HEXD[17] = "0123456789abcdef";
static const uint64_t P10[20] = {
    1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL, 10000000ULL, 100000000ULL,
    1000000000ULL, 10000000000ULL, 100000000000ULL, 1000000000000ULL, 10000000000000ULL,
    100000000000000ULL, 1000000000000000ULL, 10000000000000000ULL, 100000000000000000ULL,
    1000000000000000000ULL, 10000000000000000000ULL};

static inline uint64_t get(const Col *c, Py_ssize_t i) {
    const char *q = c->p + i * c->stride;
    /* memcpy: a packed structured array's field need not be aligned */
    switch (c->size) {
    case 1: {
        uint8_t x;
        memcpy(&x, q, 1);
        return c->sign ? (uint64_t)(int64_t)(int8_t)x : x;
    }
    case 2: {
        uint16_t x;
        memcpy(&x, q, 2);
        return c->sign ? (uint64_t)(int64_t)(int16_t)x : x;
    }
    case 4: {
        uint32_t x;
        memcpy(&x, q, 4);
        return c->sign ? (uint64_t)(int64_t)(int32_t)x : x;
    }
    default: {
        uint64_t x;
        memcpy(&x, q, 8);
        return x;
    }
    }
}

static inline int ndigits(uint64_t v) {
    uint64_t x = v | 1; /* 0 has one digit; the low bit never crosses a power of ten */
    int t = ((64 - __builtin_clzll(x)) * 1233) >> 12;
    return t + (x >= P10[t]);
}

static inline char *put_dec(char *o, uint64_t v) {
    char *e = o + ndigits(v), *p = e;
    /* 8 digits per 64-bit division, the rest in 32 bits: digits are most of a row's work */
    while (v >= 100000000ULL) {
        uint32_t r = (uint32_t)(v % 100000000ULL), hi = r / 10000, lo = r % 10000;
        v /= 100000000ULL;
        p -= 8;
        memcpy(p, DIG2 + 2 * (hi / 100), 2);
        memcpy(p + 2, DIG2 + 2 * (hi % 100), 2);
        memcpy(p + 4, DIG2 + 2 * (lo / 100), 2);
        memcpy(p + 6, DIG2 + 2 * (lo % 100), 2);
    }
    uint32_t w = (uint32_t)v;
    while (w >= 100) {
        uint32_t r = w % 100;
        w /= 100;
        p -= 2;
        memcpy(p, DIG2 + 2 * r, 2);
    }
    if (w >= 10)
        memcpy(p - 2, DIG2 + 2 * w, 2);
    else
        p[-1] = (char)('0' + w);
    return e;
}

static inline char *put_fixed(char *o, uint64_t v, Py_ssize_t width) {
    for (Py_ssize_t k = width - 1; k >= 0; k--) {
        o[k] = (char)('0' + v % 10);
        v /= 10;
    }
    return o + width;
}

static inline char *put_hex(char *o, uint64_t v, Py_ssize_t width) {
    Py_ssize_t d = width >= 0 ? (width > 16 ? 16 : width) : (v ? (67 - __builtin_clzll(v)) / 4 : 1);
    for (Py_ssize_t k = d - 1; k >= 0; k--) {
        o[k] = HEXD[v & 15];
        v >>= 4;
    }
    return o + d;
}

/* The buffers of one render, released together. */
typedef struct {
    Py_buffer *views;
    Py_ssize_t used, cap;
} Views;

static Py_buffer *view_of(Views *vs, PyObject *obj, int flags) {
    if (vs->used == vs->cap) {
        Py_ssize_t cap = vs->cap ? 2 * vs->cap : 16;
        Py_buffer *nv = PyMem_Realloc(vs->views, (size_t)cap * sizeof(Py_buffer));
        if (!nv) {
            PyErr_NoMemory();
            return NULL;
        }
        vs->views = nv;
        vs->cap = cap;
    }
    Py_buffer *b = &vs->views[vs->used];
    if (PyObject_GetBuffer(obj, b, flags) < 0)
        return NULL;
    vs->used++;
    return b;
}

static void release_all(Views *vs) {
    for (Py_ssize_t i = 0; i < vs->used; i++)
        PyBuffer_Release(&vs->views[i]);
    PyMem_Free(vs->views);
}

/* A 1-D integer column of `len` rows (bool only when `want_bool`, and then only bool). */
static int column(Views *vs, PyObject *obj, Py_ssize_t len, int want_bool, const char *what, Col *c) {
    Py_buffer *b = view_of(vs, obj, PyBUF_STRIDES | PyBUF_FORMAT);
    if (!b)
        return -1;
    const char *f = b->format ? b->format : "B";
    if (*f == '@' || *f == '=' || *f == '<')
        f++; /* native or little-endian: this code is built for the host it runs on */
    int little = 1;
    if (*(const char *)&little != 1 || f[0] == '\0' || f[1] != '\0' || !strchr("bBhHiIlLqQnN?", f[0]) ||
        (want_bool != (f[0] == '?')) ||
        (b->itemsize != 1 && b->itemsize != 2 && b->itemsize != 4 && b->itemsize != 8)) {
        PyErr_Format(PyExc_TypeError, "%s: a %s column is needed, not format %s", what,
                     want_bool ? "bool" : "native integer", b->format ? b->format : "B");
        return -1;
    }
    if (b->ndim != 1 || b->shape[0] != len) {
        PyErr_Format(PyExc_ValueError, "%s: a 1-D column of %zd rows is needed", what, len);
        return -1;
    }
    c->p = b->buf;
    c->stride = b->strides ? b->strides[0] : b->itemsize;
    c->size = (int)b->itemsize;
    c->sign = f[0] >= 'a' && f[0] <= 'z';
    return 0;
}

/* A C-contiguous 2-D matrix of bytes; `rows` -1: any number of rows. */
static int matrix(Views *vs, PyObject *obj, Py_ssize_t rows, const char *what, Op *op) {
    Py_buffer *b = view_of(vs, obj, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT);
    if (!b)
        return -1;
    if (b->itemsize != 1 || b->ndim != 2) {
        PyErr_Format(PyExc_TypeError, "%s: a 2-D uint8 matrix is needed", what);
        return -1;
    }
    if (rows >= 0 && b->shape[0] != rows) {
        PyErr_Format(PyExc_ValueError, "%s: %zd rows are needed, not %zd", what, rows, b->shape[0]);
        return -1;
    }
    op->mat = b->buf;
    op->rows = b->shape[0];
    op->w = b->shape[1];
    return 0;
}

/* Every length in [0, w]: the renderer copies them without another check. */
static int lengths_ok(const Col *c, Py_ssize_t len, Py_ssize_t w, const char *what) {
    for (Py_ssize_t i = 0; i < len; i++) {
        uint64_t x = get(c, i);
        if (x > (uint64_t)w) { /* a negative length wraps past w */
            PyErr_Format(PyExc_ValueError, "%s: a length outside [0, %zd]", what, w);
            return -1;
        }
    }
    return 0;
}

static int parse_op(Views *vs, PyObject *t, Py_ssize_t n, Op *op) {
    memset(op, 0, sizeof *op);
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) < 1) {
        PyErr_SetString(PyExc_TypeError, "an op is a tuple (kind, ...)");
        return -1;
    }
    Py_ssize_t size = PyTuple_GET_SIZE(t);
    long kind = PyLong_AsLong(PyTuple_GET_ITEM(t, 0));
    if (kind == -1 && PyErr_Occurred())
        return -1;
    static const Py_ssize_t sizes[] = {2, 4, 3, 5, 4, 3};
    if (kind < OP_LIT || kind > OP_PART || size != sizes[kind]) {
        PyErr_Format(PyExc_ValueError, "unknown op %ld of %zd items", kind, size);
        return -1;
    }
    op->kind = (int)kind;
    PyObject *a1 = PyTuple_GET_ITEM(t, 1);
    switch (kind) {
    case OP_LIT:
        if (PyBytes_AsStringAndSize(a1, (char **)&op->text, &op->text_len) < 0)
            return -1;
        op->bound = op->text_len;
        return 0;
    case OP_UINT:
    case OP_HEX: {
        /* (1, values, null, null_text) and (3, values, width, null, null_text) */
        PyObject *null = PyTuple_GET_ITEM(t, kind == OP_UINT ? 2 : 3);
        PyObject *text = PyTuple_GET_ITEM(t, kind == OP_UINT ? 3 : 4);
        if (column(vs, a1, n, 0, "values", &op->v) < 0)
            return -1;
        if (null != Py_None && column(vs, null, n, 1, "null", &op->null) < 0)
            return -1;
        if (PyBytes_AsStringAndSize(text, (char **)&op->text, &op->text_len) < 0)
            return -1;
        Py_ssize_t digits = 20;
        if (kind == OP_HEX) {
            op->width = PyLong_AsSsize_t(PyTuple_GET_ITEM(t, 2));
            if (op->width == -1 && PyErr_Occurred())
                return -1;
            if (op->width < -1) {
                PyErr_SetString(PyExc_ValueError, "hex: a width of 0 or more, or -1 for the fewest digits");
                return -1;
            }
            digits = op->width < 0 || op->width > 16 ? 16 : op->width;
        }
        op->bound = digits > op->text_len ? digits : op->text_len;
        return 0;
    }
    case OP_FIXED:
        if (column(vs, a1, n, 0, "values", &op->v) < 0)
            return -1;
        op->width = PyLong_AsSsize_t(PyTuple_GET_ITEM(t, 2));
        if (op->width == -1 && PyErr_Occurred())
            return -1;
        if (op->width < 0 || op->width > 4096) {
            PyErr_SetString(PyExc_ValueError, "fixed: a width in [0, 4096]");
            return -1;
        }
        op->bound = op->width;
        return 0;
    case OP_PICK:
        /* (4, idx, table matrix, table lengths) */
        if (column(vs, a1, n, 0, "pick indexes", &op->v) < 0 ||
            matrix(vs, PyTuple_GET_ITEM(t, 2), -1, "pick table", op) < 0 ||
            column(vs, PyTuple_GET_ITEM(t, 3), op->rows, 0, "pick lengths", &op->lens) < 0 ||
            lengths_ok(&op->lens, op->rows, op->w, "pick lengths") < 0)
            return -1;
        op->bound = op->w;
        return 0;
    default: {
        /* (5, matrix, lengths or None for padded) */
        PyObject *lens = PyTuple_GET_ITEM(t, 2);
        if (matrix(vs, a1, n, "part", op) < 0)
            return -1;
        if (lens != Py_None && (column(vs, lens, n, 0, "part lengths", &op->lens) < 0 ||
                                lengths_ok(&op->lens, n, op->w, "part lengths") < 0))
            return -1;
        op->bound = op->w;
        return 0;
    }
    }
}

/* Row i's index into a table of `rows` texts (negative counts from the end, as numpy's indexing does). */
static inline int pick_row(const Op *op, Py_ssize_t i, Py_ssize_t *row) {
    int64_t j = (int64_t)get(&op->v, i);
    if (!op->v.sign && j < 0) /* an unsigned index past INT64_MAX */
        j = INT64_MAX;
    if (j < 0)
        j += op->rows;
    if (j < 0 || j >= op->rows)
        return -1;
    *row = (Py_ssize_t)j;
    return 0;
}

/* An op's own text: a literal's, or a uint's or hex's null text. */
static inline char *put_text(char *o, const Op *op) {
    memcpy(o, op->text, (size_t)op->text_len);
    return o + op->text_len;
}

/* Whether row i of a uint or hex op is null (no null column: none is). */
static inline int is_null(const Op *op, Py_ssize_t i) { return op->null.p && op->null.p[i * op->null.stride]; }

static Py_ssize_t render_rows(const Op *ops, Py_ssize_t nops, Py_ssize_t n, char *out) {
    char *o = out;
    for (Py_ssize_t i = 0; i < n; i++) {
        for (Py_ssize_t k = 0; k < nops; k++) {
            const Op *op = &ops[k];
            switch (op->kind) {
            case OP_LIT:
                o = put_text(o, op);
                break;
            case OP_UINT:
                o = is_null(op, i) ? put_text(o, op) : put_dec(o, get(&op->v, i));
                break;
            case OP_FIXED:
                o = put_fixed(o, get(&op->v, i), op->width);
                break;
            case OP_HEX:
                o = is_null(op, i) ? put_text(o, op) : put_hex(o, get(&op->v, i), op->width);
                break;
            case OP_PICK: {
                Py_ssize_t j;
                if (pick_row(op, i, &j) < 0)
                    return -1 - i;
                Py_ssize_t len = (Py_ssize_t)get(&op->lens, j);
                memcpy(o, op->mat + j * op->w + op->w - len, (size_t)len);
                o += len;
                break;
            }
            default: {
                const unsigned char *r = op->mat + i * op->w;
                if (op->lens.p) {
                    Py_ssize_t len = (Py_ssize_t)get(&op->lens, i);
                    memcpy(o, r + op->w - len, (size_t)len);
                    o += len;
                } else { /* padded: every byte but NUL, branch-free */
                    for (Py_ssize_t c = 0; c < op->w; c++) {
                        *o = (char)r[c];
                        o += r[c] != 0;
                    }
                }
            }
            }
        }
    }
    return o - out;
}

static PyObject *render(PyObject *self, PyObject *args) {
    Py_ssize_t n;
    PyObject *seq;
    if (!PyArg_ParseTuple(args, "nO!:render", &n, &PyList_Type, &seq))
        return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "render: n must be 0 or more");
        return NULL;
    }
    Py_ssize_t nops = PyList_GET_SIZE(seq);
    Views vs = {NULL, 0, 0};
    Op *ops = PyMem_Calloc((size_t)(nops ? nops : 1), sizeof(Op));
    PyObject *out = NULL;
    if (!ops) {
        PyErr_NoMemory();
        return NULL;
    }
    Py_ssize_t row = 0;
    for (Py_ssize_t k = 0; k < nops; k++) {
        if (parse_op(&vs, PyList_GET_ITEM(seq, k), n, &ops[k]) < 0)
            goto done;
        if (ops[k].bound > PY_SSIZE_T_MAX - row) {
            PyErr_NoMemory();
            goto done;
        }
        row += ops[k].bound;
    }
    if (n && row > PY_SSIZE_T_MAX / n) {
        PyErr_NoMemory();
        goto done;
    }
    out = PyByteArray_FromStringAndSize(NULL, n * row);
    if (!out)
        goto done;
    if (n && row) {
        Py_ssize_t used = render_rows(ops, nops, n, PyByteArray_AS_STRING(out));
        if (used < 0) {
            PyErr_Format(PyExc_IndexError, "pick: row %zd's index is outside its table", -1 - used);
            Py_CLEAR(out);
            goto done;
        }
        if (PyByteArray_Resize(out, used) < 0)
            Py_CLEAR(out);
    }
done:
    release_all(&vs);
    PyMem_Free(ops);
    return out;
}

static PyMethodDef methods[] = {
    {"render", render, METH_VARARGS, "render(n, ops) -> bytearray: the rows' text (see _text.py)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_vrrl_text", "The text formats' C renderer.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__vrrl_text(void) { return PyModule_Create(&moddef); }
