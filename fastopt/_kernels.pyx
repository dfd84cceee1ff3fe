# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Cython layer: turns a validated plan into pointer and length arrays once, re-binds the
per-step arrays (gradients) cheaply, and calls C with the GIL released. No math here.

A Plan is built by fastopt.optimizers after full validation. Plan.step() accepts a call only
when everything it does not re-check is exactly as it was when the plan was validated (same
parameter objects, data pointers, shapes, strides, dtypes, writeability; gradients of the right
type, dtype and shape that overlap nothing the kernel writes). Anything else makes it return
False without touching memory, and the Python layer revalidates and raises or rebuilds.
"""
from cpython.dict cimport PyDict_GetItemWithError, PyDict_Next
from cpython.exc cimport PyErr_Clear
from cpython.ref cimport Py_XDECREF, Py_XINCREF
from cpython.object cimport PyObject
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.stdint cimport int64_t, uintptr_t
from libc.string cimport memset

import numpy as np
cimport numpy as cnp

cnp.import_array()

cdef extern from "fastopt.h" nogil:
    enum:
        FASTOPT_KERNEL_sgd
        FASTOPT_KERNEL_momentum
        FASTOPT_KERNEL_nesterov
        FASTOPT_KERNEL_adagrad
        FASTOPT_KERNEL_rmsprop
        FASTOPT_KERNEL_adam
        FASTOPT_KERNEL_traffic0
        FASTOPT_KERNEL_traffic1
        FASTOPT_KERNEL_traffic2
        FASTOPT_NUM_KERNELS
        FASTOPT_FLOAT32
        FASTOPT_FLOAT64
        FASTOPT_MAX_COEFFICIENTS
        FASTOPT_NUM_SIMD

    ctypedef struct fastopt_plan:
        int64_t n_tensors
        const int64_t *offset
        int64_t cost
        const int *dtype
        void **param
        const void **grad
        void **state0
        void **state1
        int serial_steps_left
        int backoff
        double serial_seconds

    int64_t fastopt_estimate_cost(int kernel, int64_t n_tensors, const int64_t *sizes,
                                  const int *dtypes)
    int64_t fastopt_reduce_blocks(int64_t elements)
    double fastopt_sum_of_squares(const fastopt_plan *plan, double *block_sums, int *nonfinite)
    void fastopt_run(int kernel, fastopt_plan *plan, const double *coefficients)
    int fastopt_simd_compiled(int simd)
    int fastopt_simd_supported(int simd)
    int fastopt_simd_best()
    int fastopt_simd_active()
    int fastopt_simd_select(int simd)
    const char *fastopt_simd_name(int simd)
    int fastopt_openmp_enabled()
    int fastopt_get_num_threads()
    void fastopt_set_num_threads(int n)
    int64_t fastopt_get_parallel_threshold()
    void fastopt_set_parallel_threshold(int64_t picoseconds)
    int fastopt_get_thread_backoff()
    void fastopt_set_thread_backoff(int enabled)


# name -> (kernel id, number of state arrays)
KERNELS = {
    "sgd": (FASTOPT_KERNEL_sgd, 0),
    "momentum": (FASTOPT_KERNEL_momentum, 1),
    "nesterov": (FASTOPT_KERNEL_nesterov, 1),
    "adagrad": (FASTOPT_KERNEL_adagrad, 1),
    "rmsprop": (FASTOPT_KERNEL_rmsprop, 1),
    "adam": (FASTOPT_KERNEL_adam, 2),
    "traffic0": (FASTOPT_KERNEL_traffic0, 0),
    "traffic1": (FASTOPT_KERNEL_traffic1, 1),
    "traffic2": (FASTOPT_KERNEL_traffic2, 2),
}

# ---- SIMD and threads --------------------------------------------------------------------------

def simd_names():
    """Every SIMD path fastopt knows, in order of preference (lowest first)."""
    return [fastopt_simd_name(i).decode() for i in range(FASTOPT_NUM_SIMD)]


def simd_compiled():
    """The SIMD paths this build contains."""
    return [fastopt_simd_name(i).decode() for i in range(FASTOPT_NUM_SIMD)
            if fastopt_simd_compiled(i)]


def simd_supported():
    """The SIMD paths this build contains and this CPU can run."""
    return [fastopt_simd_name(i).decode() for i in range(FASTOPT_NUM_SIMD)
            if fastopt_simd_supported(i)]


def simd_best():
    return fastopt_simd_name(fastopt_simd_best()).decode()


def simd_active():
    return fastopt_simd_name(fastopt_simd_active()).decode()


def simd_select(str name):
    """Use the named SIMD path from now on; ValueError if this CPU or build cannot."""
    names = simd_names()
    if name not in names:
        raise ValueError(f"unknown SIMD path {name!r}; known paths: {', '.join(names)}")
    if fastopt_simd_select(names.index(name)) != 0:
        raise ValueError(f"SIMD path {name!r} is not available here; available: "
                         f"{', '.join(simd_supported())}")


def openmp_enabled():
    return bool(fastopt_openmp_enabled())


def get_num_threads():
    return fastopt_get_num_threads()


def set_num_threads(int n):
    fastopt_set_num_threads(n)


def get_parallel_threshold():
    return fastopt_get_parallel_threshold()


def set_parallel_threshold(int64_t picoseconds):
    """Steps estimated to take less than this on one thread run on one thread (0: every step
    with more than one element is split)."""
    fastopt_set_parallel_threshold(picoseconds)


def get_thread_backoff():
    return bool(fastopt_get_thread_backoff())


def set_thread_backoff(bint enabled):
    """Whether a plan whose threaded step was slower than one thread runs on one thread for a
    while (default True)."""
    fastopt_set_thread_backoff(enabled)


# ---- the reduction pass ------------------------------------------------------------------------

def sum_of_squares(tuple arrays):
    """(sum of the squares of every element, in double; any NaN or infinity?) over arrays, taken
    as one concatenated run in tuple order. Every array must be a float32 or float64 ndarray,
    aligned, in native byte order, and C-contiguous (or F-contiguous: then read in F order).
    Bit-identical for every SIMD path and thread count (see fastopt_sum_of_squares in
    csrc/fastopt.h)."""
    cdef Py_ssize_t i, n = len(arrays)
    cdef size_t count = max(n, 1)
    cdef cnp.ndarray a
    cdef fastopt_plan plan
    cdef int nonfinite = 0
    cdef double total
    memset(&plan, 0, sizeof(plan))
    cdef int64_t *offsets = <int64_t *>PyMem_Malloc((n + 1) * sizeof(int64_t))
    cdef int *dtypes = <int *>PyMem_Malloc(count * sizeof(int))
    cdef const void **data = <const void **>PyMem_Malloc(count * sizeof(void *))
    cdef double *block_sums = NULL
    try:
        if offsets == NULL or dtypes == NULL or data == NULL:
            raise MemoryError()
        offsets[0] = 0
        for i in range(n):
            a = <cnp.ndarray?>arrays[i]
            if not ((cnp.PyArray_IS_C_CONTIGUOUS(a) or cnp.PyArray_IS_F_CONTIGUOUS(a))
                    and cnp.PyArray_ISALIGNED(a) and cnp.PyArray_ISNOTSWAPPED(a)):
                raise ValueError("sum_of_squares takes contiguous, aligned, native arrays")
            if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32:
                dtypes[i] = FASTOPT_FLOAT32
            elif cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT64:
                dtypes[i] = FASTOPT_FLOAT64
            else:
                raise TypeError("sum_of_squares takes float32 and float64 arrays")
            data[i] = cnp.PyArray_DATA(a)
            offsets[i + 1] = offsets[i] + cnp.PyArray_SIZE(a)
        block_sums = <double *>PyMem_Malloc(
            max(fastopt_reduce_blocks(offsets[n]), 1) * sizeof(double))
        if block_sums == NULL:
            raise MemoryError()
        plan.n_tensors = n
        plan.offset = offsets
        plan.dtype = dtypes
        plan.grad = data
        with nogil:
            total = fastopt_sum_of_squares(&plan, block_sums, &nonfinite)
    finally:
        PyMem_Free(offsets)
        PyMem_Free(dtypes)
        PyMem_Free(data)
        PyMem_Free(block_sums)
    return total, bool(nonfinite)


# ---- helpers -----------------------------------------------------------------------------------

cdef inline bint _is_contiguous(cnp.ndarray a, bint fortran):
    if fortran:
        return cnp.PyArray_IS_F_CONTIGUOUS(a)
    return cnp.PyArray_IS_C_CONTIGUOUS(a)


cdef inline bint _direct(cnp.ndarray a, bint fortran):
    """Can the kernel use a's memory as it is (flat, aligned, native byte order)?"""
    return (_is_contiguous(a, fortran) and cnp.PyArray_ISALIGNED(a)
            and cnp.PyArray_ISNOTSWAPPED(a))


cdef inline void _byte_range(cnp.ndarray a, uintptr_t *low, uintptr_t *high):
    """[low, high): the bytes a can touch (its whole extent, for a strided view)."""
    cdef uintptr_t start = <uintptr_t>cnp.PyArray_DATA(a)
    cdef Py_ssize_t lo = 0, hi = 0, extent
    cdef int d
    for d in range(cnp.PyArray_NDIM(a)):
        extent = (cnp.PyArray_DIM(a, d) - 1) * cnp.PyArray_STRIDE(a, d)
        if extent < 0:
            lo += extent
        else:
            hi += extent
    low[0] = start + lo
    high[0] = start + hi + <uintptr_t>cnp.PyArray_ITEMSIZE(a)


ctypedef struct tensor_info:
    # What Plan.step re-checks for one key, without touching a Python list or attribute.
    PyObject *key               # borrowed: Plan.keys holds it
    PyObject *param             # borrowed: Plan.params holds it
    void *data                  # the parameter's data pointer at validation time
    int typenum                 # its NumPy type number
    int ndim                    # and its shape: ndim dimensions at Plan.dims[dim_start:]
    Py_ssize_t dim_start
    bint fortran                # the flat order of the kernel's view: Fortran or C
    bint in_place               # the kernel writes the parameter itself, not a staging buffer
    const void *checked_grad    # data of the last contiguous gradient that overlapped nothing
    PyObject *grad              # strong reference to this step's gradient (or its copy)


cdef inline bint _has_shape(const tensor_info *t, const Py_ssize_t *dims, cnp.ndarray a):
    """Has a the shape t's parameter had at validation time (t.ndim sizes at dims[t.dim_start:])?"""
    if cnp.PyArray_NDIM(a) != t.ndim:
        return False
    cdef int d
    for d in range(t.ndim):
        if cnp.PyArray_DIM(a, d) != dims[t.dim_start + d]:
            return False
    return True


cdef class Plan:
    """Pointers for one optimizer over one set of parameter arrays.

    kernel: a name from KERNELS. keys: the parameter names, in update order. params: the
    caller's arrays (validated: float32/float64, writeable, no overlaps). states: per key, a
    tuple of the optimizer's own state arrays (contiguous, C or Fortran order, same shape and
    dtype as the parameter). The plan keeps every array alive while it exists.
    """
    cdef int kernel_id
    cdef int n_states
    cdef Py_ssize_t n
    cdef readonly tuple keys
    cdef readonly tuple params  # the caller's arrays, checked for identity every step
    cdef tuple targets          # what the kernel writes for each param: itself or a staging buffer
    cdef tuple staged           # indices of params updated through a staging buffer
    cdef tuple states
    cdef bint started           # __init__ has been called (it may be called once)
    cdef bint ready             # __init__ has completed: the plan may run
    cdef tensor_info *info      # per tensor
    cdef int *dtypes            # per tensor: FASTOPT_FLOAT32 or FASTOPT_FLOAT64
    cdef void **param_ptr
    cdef const void **grad_ptr
    cdef void **state0_ptr
    cdef void **state1_ptr
    cdef Py_ssize_t *dims
    cdef int64_t *sizes
    cdef int64_t *offsets       # prefix sums of sizes: the plan's concatenated element run
    cdef fastopt_plan plan
    cdef uintptr_t *written_low  # sorted byte ranges of everything the kernel writes
    cdef uintptr_t *written_high
    cdef Py_ssize_t n_written
    cdef bint busy

    def __cinit__(self):
        self.n = 0
        self.info = NULL
        self.dtypes = NULL
        self.param_ptr = NULL
        self.grad_ptr = NULL
        self.state0_ptr = NULL
        self.state1_ptr = NULL
        self.dims = NULL
        self.sizes = NULL
        self.offsets = NULL
        self.written_low = NULL
        self.written_high = NULL
        self.busy = False
        self.started = False
        self.ready = False

    def __dealloc__(self):
        if self.info != NULL:
            self._release_grads()
        PyMem_Free(self.info)
        PyMem_Free(self.dtypes)
        PyMem_Free(self.param_ptr)
        PyMem_Free(self.grad_ptr)
        PyMem_Free(self.state0_ptr)
        PyMem_Free(self.state1_ptr)
        PyMem_Free(self.dims)
        PyMem_Free(self.sizes)
        PyMem_Free(self.offsets)
        PyMem_Free(self.written_low)
        PyMem_Free(self.written_high)

    def __init__(self, str kernel, tuple keys, list params, list states):
        cdef Py_ssize_t i, j, n = len(keys)
        cdef cnp.ndarray p, s
        cdef tensor_info *t
        cdef bint fortran
        # Once only: every pointer below is borrowed from, or points into, what this call stores.
        if self.started:
            raise RuntimeError("a Plan is initialised once; build a new one")
        self.started = True
        if len(params) != n or len(states) != n:
            raise ValueError("keys, params and states must have the same length")
        self.kernel_id, self.n_states = KERNELS[kernel]
        self.keys = keys
        self.params = tuple(params)
        self.states = tuple([tuple(group) for group in states])
        targets, staged = [], []

        cdef Py_ssize_t total_dims = 0
        for i in range(n):
            total_dims += cnp.PyArray_NDIM(<cnp.ndarray?>params[i])
        cdef size_t count = max(n, 1)
        self.info = <tensor_info *>PyMem_Malloc(count * sizeof(tensor_info))
        self.dtypes = <int *>PyMem_Malloc(count * sizeof(int))
        self.param_ptr = <void **>PyMem_Malloc(count * sizeof(void *))
        self.grad_ptr = <const void **>PyMem_Malloc(count * sizeof(void *))
        self.dims = <Py_ssize_t *>PyMem_Malloc(max(total_dims, 1) * sizeof(Py_ssize_t))
        self.sizes = <int64_t *>PyMem_Malloc(count * sizeof(int64_t))
        self.offsets = <int64_t *>PyMem_Malloc((n + 1) * sizeof(int64_t))
        if self.n_states >= 1:
            self.state0_ptr = <void **>PyMem_Malloc(count * sizeof(void *))
        if self.n_states >= 2:
            self.state1_ptr = <void **>PyMem_Malloc(count * sizeof(void *))
        if (self.info == NULL or self.dtypes == NULL or self.param_ptr == NULL
                or self.grad_ptr == NULL or self.dims == NULL or self.sizes == NULL
                or self.offsets == NULL or (self.n_states >= 1 and self.state0_ptr == NULL)
                or (self.n_states >= 2 and self.state1_ptr == NULL)):
            raise MemoryError()
        memset(self.info, 0, count * sizeof(tensor_info))
        self.n = n  # from here on __dealloc__ walks info[0:n]

        cdef Py_ssize_t next_dim = 0
        for i in range(n):
            p = self.params[i]
            t = &self.info[i]
            t.key = <PyObject *>self.keys[i]
            t.param = <PyObject *>p
            t.data = cnp.PyArray_DATA(p)
            t.typenum = cnp.PyArray_TYPE(p)
            if t.typenum == cnp.NPY_FLOAT32:
                self.dtypes[i] = FASTOPT_FLOAT32
            elif t.typenum == cnp.NPY_FLOAT64:
                self.dtypes[i] = FASTOPT_FLOAT64
            else:
                raise TypeError("fastopt kernels take float32 and float64 arrays")
            t.ndim = cnp.PyArray_NDIM(p)
            t.dim_start = next_dim
            for j in range(t.ndim):
                self.dims[next_dim] = cnp.PyArray_DIM(p, j)
                next_dim += 1
            group = self.states[i]
            if len(group) != self.n_states:
                raise ValueError("wrong number of state arrays")
            # The flat order is the state arrays' (they are ours and always contiguous); with no
            # state, the parameter's own if it has one.
            if self.n_states:
                fortran = not cnp.PyArray_IS_C_CONTIGUOUS(group[0])
            else:
                fortran = (not cnp.PyArray_IS_C_CONTIGUOUS(p)) and cnp.PyArray_IS_F_CONTIGUOUS(p)
            for j in range(self.n_states):
                s = group[j]
                # kernels trust the plan: a state array of another size would be overrun
                if (not _direct(s, fortran) or cnp.PyArray_TYPE(s) != t.typenum
                        or cnp.PyArray_SIZE(s) != cnp.PyArray_SIZE(p)):
                    raise ValueError("state arrays must be contiguous, aligned and of the "
                                     "parameter's dtype and size")
            t.fortran = fortran
            t.in_place = _direct(p, fortran)
            if t.in_place:
                target = p
            else:
                array = <object>p
                target = np.empty(array.shape, dtype=array.dtype, order="F" if fortran else "C")
                staged.append(i)
            targets.append(target)
            self.param_ptr[i] = cnp.PyArray_DATA(<cnp.ndarray>target)
            self.sizes[i] = cnp.PyArray_SIZE(p)
            if self.n_states >= 1:
                self.state0_ptr[i] = cnp.PyArray_DATA(<cnp.ndarray>group[0])
            if self.n_states >= 2:
                self.state1_ptr[i] = cnp.PyArray_DATA(<cnp.ndarray>group[1])
            self.grad_ptr[i] = NULL

        self.targets = tuple(targets)
        self.staged = tuple(staged)
        self.offsets[0] = 0
        for i in range(n):
            self.offsets[i + 1] = self.offsets[i] + self.sizes[i]
        self.plan.n_tensors = n
        self.plan.offset = self.offsets
        self.plan.cost = fastopt_estimate_cost(self.kernel_id, n, self.sizes, self.dtypes)
        self.plan.serial_steps_left = 0
        self.plan.backoff = 0
        self.plan.serial_seconds = 0
        self.plan.dtype = self.dtypes
        self.plan.param = self.param_ptr
        self.plan.grad = self.grad_ptr
        self.plan.state0 = self.state0_ptr
        self.plan.state1 = self.state1_ptr

        self._build_written_ranges()
        self.ready = True

    cdef _build_written_ranges(self):
        """Sorted, merged byte ranges of every parameter and state array, so that a gradient's
        overlap with any of them is a binary search."""
        ranges = []
        cdef uintptr_t low, high
        cdef Py_ssize_t i
        for i in range(self.n):
            arrays = [self.params[i]] + list(self.states[i])
            for a in arrays:
                if cnp.PyArray_SIZE(<cnp.ndarray>a) == 0:
                    continue
                _byte_range(<cnp.ndarray>a, &low, &high)
                ranges.append((low, high))
        ranges.sort()
        merged = []
        for low, high in ranges:
            last = len(merged) - 1
            if merged and low < merged[last][1]:
                merged[last] = (merged[last][0], max(merged[last][1], high))
            else:
                merged.append((low, high))
        self.n_written = len(merged)
        self.written_low = <uintptr_t *>PyMem_Malloc(max(self.n_written, 1) * sizeof(uintptr_t))
        self.written_high = <uintptr_t *>PyMem_Malloc(max(self.n_written, 1) * sizeof(uintptr_t))
        if self.written_low == NULL or self.written_high == NULL:
            raise MemoryError()
        for i in range(self.n_written):
            self.written_low[i] = merged[i][0]
            self.written_high[i] = merged[i][1]

    cdef bint _overlaps_written(self, cnp.ndarray a):
        if cnp.PyArray_SIZE(a) == 0:
            return False
        cdef uintptr_t low, high
        _byte_range(a, &low, &high)
        # the first range whose end lies past low
        cdef Py_ssize_t lo = 0, hi = self.n_written, mid
        while lo < hi:
            mid = (lo + hi) // 2
            if self.written_high[mid] <= low:
                lo = mid + 1
            else:
                hi = mid
        return lo < self.n_written and self.written_low[lo] < high

    cdef bint _param_unchanged(self, Py_ssize_t i, PyObject *obj):
        """Is obj the very array validated at position i, with nothing about it changed?"""
        cdef tensor_info *t = &self.info[i]
        if obj != t.param:
            return False
        cdef cnp.ndarray p = <cnp.ndarray>obj
        if cnp.PyArray_DATA(p) != t.data or not cnp.PyArray_ISWRITEABLE(p):
            return False
        if cnp.PyArray_TYPE(p) != t.typenum or not cnp.PyArray_ISNOTSWAPPED(p):
            return False
        if not _has_shape(t, self.dims, p):
            return False
        if t.in_place:  # its layout must still be the one validated
            return _direct(p, t.fortran)
        return True

    cdef PyObject *_lookup(self, dict mapping, Py_ssize_t i, Py_ssize_t *position):
        """mapping[keys[i]] (borrowed), or NULL if absent. A dict built with the plan's keys in
        the plan's order is read by walking it, without hashing: the next entry is taken when its
        key is the very key object, otherwise the key is looked up."""
        cdef PyObject *key
        cdef PyObject *value
        cdef PyObject *wanted = self.info[i].key
        if PyDict_Next(mapping, position, &key, &value) and key == wanted:
            return value
        value = PyDict_GetItemWithError(mapping, <object>wanted)
        if value == NULL:
            PyErr_Clear()  # an unhashable or failing key: let the full validation report it
        return value

    cdef void _release_grads(self):
        """Drop the references step() took to this step's gradients."""
        cdef Py_ssize_t i
        cdef PyObject *held
        for i in range(self.n):
            held = self.info[i].grad
            self.info[i].grad = NULL
            self.grad_ptr[i] = NULL
            Py_XDECREF(held)

    @property
    def thread_state(self):
        """How threads fared on this plan, for diagnostics: steps still to run on one thread,
        the length of the next back-off, and the fastest one-thread step timed (seconds)."""
        return {"serial_steps_left": self.plan.serial_steps_left, "backoff": self.plan.backoff,
                "serial_seconds": self.plan.serial_seconds}

    def params_unchanged(self, params):
        """Does params hold exactly the arrays this plan was built for, none of them changed
        (data, shape, dtype, layout, writeability)? Then the plan can be reused."""
        cdef Py_ssize_t i, position = 0
        cdef PyObject *item
        if not self.ready or not isinstance(params, dict) or len(<dict>params) != self.n:
            return False
        for i in range(self.n):
            item = self._lookup(<dict>params, i, &position)
            if item == NULL or not self._param_unchanged(i, item):
                return False
        return True

    def step(self, params, grads, coefficients, bint trusted=False):
        """Run one step if params and grads fit this plan; return whether it ran.

        coefficients: up to 4 floats, this step's scalars in double. trusted: the caller has
        just validated grads in full (skips the conservative overlap test, which a strided
        view interleaved with a parameter can fail without really overlapping).
        """
        cdef double c[FASTOPT_MAX_COEFFICIENTS]
        cdef Py_ssize_t i, n_coefficients
        if self.busy:
            raise RuntimeError("this optimizer is already running update() in another thread; "
                               "use one optimizer per thread")
        # Busy from here: what follows may run Python code (reading coefficients, copying a
        # gradient), and another thread must not get in and rebind the pointers meanwhile.
        self.busy = True
        try:
            if not (self.ready and isinstance(params, dict) and isinstance(grads, dict)):
                return False
            if len(<dict>params) != self.n or len(<dict>grads) != self.n:
                return False
            n_coefficients = len(coefficients)
            if n_coefficients > FASTOPT_MAX_COEFFICIENTS:
                raise ValueError(f"at most {FASTOPT_MAX_COEFFICIENTS} coefficients")
            memset(c, 0, sizeof(c))
            for i in range(n_coefficients):
                c[i] = coefficients[i]
            if not self._bind_grads(<dict>params, <dict>grads, trusted):
                return False
            for i in self.staged:
                np.copyto(self.targets[i], self.params[i])
            with nogil:
                fastopt_run(self.kernel_id, &self.plan, c)
            for i in self.staged:
                np.copyto(self.params[i], self.targets[i])
        finally:
            self._release_grads()
            self.busy = False
        return True

    cdef bint _bind_grads(self, dict params, dict grads, bint trusted) except -1:
        """Check every key's parameter and gradient; point the plan at the gradients, holding a
        reference to each until _release_grads(). False if anything does not fit."""
        cdef Py_ssize_t i, param_position = 0, grad_position = 0
        cdef PyObject *item
        cdef cnp.ndarray g
        cdef tensor_info *t
        cdef bint direct
        for i in range(self.n):
            t = &self.info[i]
            item = self._lookup(params, i, &param_position)
            if item == NULL or not self._param_unchanged(i, item):
                return False
            item = self._lookup(grads, i, &grad_position)
            if item == NULL or not cnp.PyArray_Check(<object>item):
                return False
            g = <cnp.ndarray>item
            if cnp.PyArray_TYPE(g) != t.typenum or not cnp.PyArray_ISNOTSWAPPED(g):
                return False
            if not _has_shape(t, self.dims, g):
                return False
            direct = _direct(g, t.fortran)
            # A contiguous gradient's bytes are [data, data + size * itemsize): the same data
            # pointer as a gradient that passed the test before means the same verdict.
            if not trusted and not (direct and cnp.PyArray_DATA(g) == t.checked_grad):
                if self._overlaps_written(g):
                    return False
                if direct:
                    t.checked_grad = cnp.PyArray_DATA(g)
            if not direct:
                g = np.array(g, order="F" if t.fortran else "C", copy=True)
            Py_XINCREF(<PyObject *>g)
            t.grad = <PyObject *>g
            self.grad_ptr[i] = cnp.PyArray_DATA(g)
        return True
