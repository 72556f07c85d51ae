/* A callable that takes any arguments and does nothing, in C: the benchmarks' stand-in for a backend call
 * that is C code (as cupy.RawKernel.__call__, a Cython method, is), so that the recorder's own work can be
 * told apart from what entering a Python backend function from the C launch path costs. Built by
 * vrrl_gpu._native.build (bench_recorder_instructions.py, _c_noop). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *noop(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"noop", (PyCFunction)(void (*)(void))noop, METH_FASTCALL | METH_KEYWORDS, "Take anything, do nothing."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_vrrl_bench_noop", NULL, -1, methods};

PyMODINIT_FUNC PyInit__vrrl_bench_noop(void) { return PyModule_Create(&module); }
