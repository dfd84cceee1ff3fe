# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Cython layer: turns a validated plan into pointer and length arrays once, re-binds the
per-step arrays (gradients) cheaply, and calls C with the GIL released. No math here.

A Plan is built by fastopt.optimizers after full validation. Plan.step() runs a step only when
everything it does not re-check is exactly as it was when the plan was validated (same parameter
objects, data pointers, shapes, strides, dtypes, writeability; gradients of the right type, dtype
and shape that overlap nothing the kernel writes). Otherwise it returns a reason code (DECLINED_*)
without touching memory, and the Python layer revalidates and raises or rebuilds. Whether two
arrays overlap is decided here and only here (Plan.overlap, Plan.step's DECLINED_OVERLAP).

The kernels, their state and coefficient counts and the dtypes come from the C registry
(csrc/fastopt.h) at import: KERNELS and DTYPES.
"""
cimport cython
from cpython.dict cimport PyDict_CheckExact, PyDict_GetItemWithError, PyDict_Next
from cpython.exc cimport PyErr_Clear
from cpython.ref cimport Py_XDECREF, Py_XINCREF
from cpython.object cimport PyObject
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.stdint cimport INT64_MAX, int64_t, uint64_t, uintptr_t
from libc.string cimport memset

import collections

import numpy as np
cimport numpy as cnp

cnp.import_array()

cdef extern from "fastopt.h" nogil:
    enum:
        FASTOPT_NUM_KERNELS
        FASTOPT_NUM_DTYPES
        FASTOPT_MAX_STATES
        FASTOPT_MAX_COEFFICIENTS
        FASTOPT_NUM_SIMD
        FASTOPT_MAX_THREADS

    ctypedef struct fastopt_kernel_info:
        const char *name
        int n_states
        int n_coefficients
        const char *coefficient_names

    ctypedef struct fastopt_dtype_info:
        const char *numpy_name
        int item_size
        int converted

    ctypedef struct fastopt_plan:
        int64_t n_tensors
        const int64_t *offset
        int64_t cost
        const int *dtype
        void **param
        const void **grad
        void **state
        int n_states
        const int *group
        int mixed
        const int *grad_dtype
        const int *state_dtype
        int master
        int stochastic
        uint64_t seed
        uint64_t step
        int samples[2]
        double mean_seconds[2]
        double last_seconds[2]
        double seconds_since_other
        int warm
        int better
        int burst_mode
        int burst_left
        double burst_seconds

    const fastopt_kernel_info *fastopt_kernel(int kernel)
    const fastopt_dtype_info *fastopt_dtype(int dtype)
    int64_t fastopt_estimate_cost(int kernel, int64_t n_tensors, const int64_t *sizes,
                                  const int *dtypes)
    int64_t fastopt_reduce_blocks(int64_t elements)
    double fastopt_sum_of_squares(const fastopt_plan *plan, double *block_sums, int *nonfinite)
    void fastopt_run(int kernel, fastopt_plan *plan, const double *coefficients)
    void fastopt_run_groups(const int *kernels, fastopt_plan *plan, const double *coefficients)
    int fastopt_simd_compiled(int simd)
    int fastopt_simd_supported(int simd)
    int fastopt_simd_best()
    int fastopt_simd_active()
    int fastopt_simd_select(int simd)
    const char *fastopt_simd_name(int simd)
    int fastopt_threads_enabled()
    void fastopt_threads_prepare()
    int fastopt_get_num_threads()
    void fastopt_set_num_threads(int n)
    int64_t fastopt_get_parallel_threshold()
    void fastopt_set_parallel_threshold(int64_t picoseconds)
    int fastopt_get_thread_backoff()
    void fastopt_set_thread_backoff(int enabled)


# ---- the registry ------------------------------------------------------------------------------

# A kernel of the C registry: its index there, its number of state arrays and the names of its
# coefficients, in the order step() takes them.
Kernel = collections.namedtuple("Kernel", ["id", "n_states", "coefficient_names"])


def _read_registry():
    cdef int k, d
    cdef const fastopt_kernel_info *info
    kernels = {}
    for k in range(FASTOPT_NUM_KERNELS):
        info = fastopt_kernel(k)
        names = tuple(name for name in info.coefficient_names.decode().split(",") if name)
        if len(names) != info.n_coefficients or info.n_coefficients > FASTOPT_MAX_COEFFICIENTS \
                or info.n_states > FASTOPT_MAX_STATES:
            raise ImportError(f"fastopt: the C registry entry of {info.name.decode()} is "
                              f"inconsistent")
        kernels[info.name.decode()] = Kernel(k, info.n_states, names)
    # The NumPy name of each row of the C dtype table, and whether it is a converted row
    # (16-bit storage, float32 compute: fastopt.optim only).
    names = tuple(fastopt_dtype(d).numpy_name.decode() for d in range(FASTOPT_NUM_DTYPES))
    converted = tuple(bool(fastopt_dtype(d).converted) for d in range(FASTOPT_NUM_DTYPES))
    return kernels, names, converted


MAX_THREADS = FASTOPT_MAX_THREADS  # most threads set_num_threads accepts
MAX_COEFFICIENTS = FASTOPT_MAX_COEFFICIENTS  # a group's stride in run_groups' coefficients

# name -> Kernel(id, n_states, coefficient_names), as csrc/fastopt.h registers them
# DTYPE_NAMES, DTYPE_CONVERTED: per row of the C dtype table, NumPy's name for it and whether
# it is stored in 16 bits and computed in float32 (bfloat16, float16: fastopt.optim only)
KERNELS, DTYPE_NAMES, DTYPE_CONVERTED = _read_registry()
# The NumPy dtypes of the native rows (float32, float64): what every optimizer takes.
DTYPES = tuple(np.dtype(name) for name, converted in zip(DTYPE_NAMES, DTYPE_CONVERTED)
               if not converted)
_DTYPE_ROW_BY_TYPENUM = {}


def _learn_dtype_rows():
    """Map NumPy type numbers to rows for every row whose dtype exists now (bfloat16 exists
    once ml_dtypes is imported; its type number is assigned then)."""
    for row, name in enumerate(DTYPE_NAMES):
        try:
            _DTYPE_ROW_BY_TYPENUM[np.dtype(name).num] = row
        except TypeError:
            pass


_learn_dtype_rows()
_FLOAT32_ROW, _FLOAT64_ROW = DTYPE_NAMES.index("float32"), DTYPE_NAMES.index("float64")


def dtype_row(dtype):
    """The C dtype table's row of a NumPy dtype (native byte order), or -1."""
    dtype = np.dtype(dtype)
    if not dtype.isnative:
        return -1
    if dtype.num not in _DTYPE_ROW_BY_TYPENUM:
        _learn_dtype_rows()
    return _DTYPE_ROW_BY_TYPENUM.get(dtype.num, -1)


cdef int _dtype_row(cnp.ndarray a):
    """The C dtype row of a's dtype, or -1 if the kernels do not take it (or byte-swapped)."""
    if not cnp.PyArray_ISNOTSWAPPED(a):
        return -1
    cdef int row = _DTYPE_ROW_BY_TYPENUM.get(cnp.PyArray_TYPE(a), -1)
    if row < 0:
        row = dtype_row(a.dtype)
    return row


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


def threads_enabled():
    """Whether this build has worker threads (FASTOPT_THREADS=0 builds a serial one)."""
    return bool(fastopt_threads_enabled())


fastopt_threads_prepare()


def get_num_threads():
    return fastopt_get_num_threads()


def set_num_threads(int n):
    fastopt_set_num_threads(n)


def get_parallel_threshold():
    return fastopt_get_parallel_threshold()


def set_parallel_threshold(int64_t picoseconds):
    """Steps estimated to take less than this on one thread run on one thread (0: every step
    of 32 elements or more is split, in chunks of 16 elements: tests use it)."""
    fastopt_set_parallel_threshold(picoseconds)


def get_thread_backoff():
    """True (default): each plan measures its steps on one thread and on the pool and runs the
    faster (see choose_mode in csrc/engine.c); False: always the pool above the threshold."""
    return bool(fastopt_get_thread_backoff())


def set_thread_backoff(bint enabled):
    """Whether a plan whose threaded step was slower than one thread runs on one thread for a
    while (default True)."""
    fastopt_set_thread_backoff(enabled)


# ---- the reduction pass ------------------------------------------------------------------------

def sum_of_squares(tuple arrays):
    """(sum of the squares of every element, in double; any NaN or infinity?) over arrays, taken
    as one concatenated run in tuple order. Every array must be an ndarray of one of DTYPES,
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
            dtypes[i] = _dtype_row(a)
            if dtypes[i] < 0:
                raise TypeError(f"sum_of_squares takes arrays of the dtypes {DTYPES}")
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
    int grad_typenum            # the NumPy type number its gradients must have
    int ndim                    # its shape and strides: ndim dimensions at Plan.dims[dim_start:],
    Py_ssize_t dim_start        # then ndim strides (what a staged copy reads and writes through)
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


# What Plan.step returns: 0 (STEP_RAN, falsy) when it ran, or why it declined (nothing was
# modified then). C constants, so returning one costs no lookup on the hot path.
cdef enum:
    _STEP_RAN = 0
    _DECLINED_NOT_READY = 1     # the plan was never (fully) built
    _DECLINED_STRUCTURE = 2     # params or grads is not exactly a dict, or has other keys
    _DECLINED_PARAM = 3         # params[keys[declined_index]] is not the array validated, or changed
    _DECLINED_GRAD = 4          # grads[keys[declined_index]]: missing, not exactly an ndarray, or
                                # of another dtype, byte order or shape than its parameter
    _DECLINED_OVERLAP = 5       # grads[keys[declined_index]] shares memory with a written array:
                                # Plan.written_name(overlapping_index) names it

STEP_RAN = _STEP_RAN
DECLINED_NOT_READY = _DECLINED_NOT_READY
DECLINED_STRUCTURE = _DECLINED_STRUCTURE
DECLINED_PARAM = _DECLINED_PARAM
DECLINED_GRAD = _DECLINED_GRAD
DECLINED_OVERLAP = _DECLINED_OVERLAP


def bounds_overlapping(list arrays):
    """Pairs (i, j), i < j, of indices into arrays (ndarrays) whose byte extents overlap, in the
    order of a sweep over sorted extents: O(n log n) plus the pairs found. A candidate only:
    numpy.shares_memory decides."""
    events = []
    cdef uintptr_t low, high
    for index, array in enumerate(arrays):
        if cnp.PyArray_SIZE(<cnp.ndarray>array) == 0:
            continue
        _byte_range(<cnp.ndarray>array, &low, &high)
        events.append((low, high, index))
    events.sort()
    pairs = []
    active = []  # (high, index)
    for low, high, index in events:
        active = [entry for entry in active if entry[0] > low]
        pairs += [(min(index, other), max(index, other)) for _, other in active]
        active.append((high, index))
    return pairs


cdef class Plan:
    """Pointers for one optimizer over one set of parameter arrays.

    kernel: a name from KERNELS. keys: the parameter names, in update order. params: the
    caller's arrays (validated: of DTYPES, writeable, of the shapes the state has). states: per
    key, a tuple of the optimizer's own state arrays (contiguous, C or Fortran order, same shape
    and dtype as the parameter), as many as the kernel has. The plan keeps every array alive
    while it exists. After construction, overlap is None, or the pair of names (in written order:
    params by key, then each state by key) of two arrays the step writes that share memory:
    such a plan never runs.
    """
    cdef int kernel_id
    cdef int n_states
    cdef int n_coefficients
    cdef Py_ssize_t n
    cdef readonly str kernel    # its name in KERNELS
    cdef readonly tuple keys
    cdef readonly tuple params  # the caller's arrays, checked for identity every step
    cdef readonly tuple state_names
    cdef readonly object overlap  # None, or the names of two written arrays that share memory
    cdef readonly Py_ssize_t declined_index     # the key index of the last DECLINED_PARAM/GRAD
    cdef readonly Py_ssize_t overlapping_index  # the written array of the last DECLINED_OVERLAP
    cdef tuple targets          # what the kernel writes for each param: itself or a staging buffer
    cdef tuple staged           # indices of params updated through a staging buffer
    cdef tuple states
    cdef list written           # every array the kernel writes: params (by key), then states
    cdef bint started           # __init__ has been called (it may be called once)
    cdef bint ready             # __init__ has completed: the plan may run
    # One allocation holds every per-tensor array below; the layout is decided in __init__.
    cdef void *memory
    cdef tensor_info *info      # per tensor
    cdef void **param_ptr       # per tensor
    cdef const void **grad_ptr  # per tensor
    cdef void **state_ptr       # n_states * n: state s of tensor t at [s * n + t]
    cdef int64_t *sizes         # per tensor
    cdef int64_t *offsets       # n + 1 prefix sums of sizes: the plan's concatenated element run
    cdef uintptr_t *written_low  # sorted, merged byte ranges of everything the kernel writes
    cdef uintptr_t *written_high
    cdef Py_ssize_t *dims       # every parameter's dimensions and strides, one after another
    cdef int *dtypes            # per tensor: a row of the C dtype table
    cdef Py_ssize_t n_written
    cdef fastopt_plan plan
    cdef bint busy
    # Groups (fastopt.optim's per-key hyperparameters): per tensor its group, and per group the
    # kernel and coefficients of the step being run (fastopt_run_groups).
    cdef readonly Py_ssize_t n_groups
    cdef readonly tuple groups  # per key, its group
    cdef int *group_of_tensor
    cdef int *grad_dtypes       # mixed precision (fastopt.optim): per tensor, per state array
    cdef int *state_dtypes
    cdef int *group_kernels
    cdef double *group_coefficients
    cdef public object tag      # the optimizer's own per-plan data (fastopt.optim: the groups)

    def __cinit__(self):
        self.n = 0
        self.memory = NULL
        self.info = NULL
        self.busy = False
        self.group_of_tensor = NULL
        self.grad_dtypes = NULL
        self.state_dtypes = NULL
        self.group_kernels = NULL
        self.group_coefficients = NULL
        self.n_groups = 1
        self.groups = ()
        self.started = False
        self.ready = False
        self.declined_index = -1
        self.overlapping_index = -1

    def __dealloc__(self):
        if self.info != NULL:
            self._release_grads()
        PyMem_Free(self.memory)
        PyMem_Free(self.group_of_tensor)
        PyMem_Free(self.grad_dtypes)
        PyMem_Free(self.state_dtypes)
        PyMem_Free(self.group_kernels)
        PyMem_Free(self.group_coefficients)

    cdef int _allocate(self, Py_ssize_t n, Py_ssize_t n_states, Py_ssize_t total_dims) except -1:
        """The one allocation: 8-byte-aligned slices for every per-tensor array."""
        cdef Py_ssize_t count = max(n, 1), ranges = max(n * (1 + n_states), 1)
        cdef Py_ssize_t sizes[10]
        sizes[:] = [count * sizeof(tensor_info), count * sizeof(void *), count * sizeof(void *),
                    max(n_states * n, 1) * sizeof(void *), count * sizeof(int64_t),
                    (n + 1) * sizeof(int64_t), ranges * sizeof(uintptr_t),
                    ranges * sizeof(uintptr_t), max(total_dims, 1) * sizeof(Py_ssize_t),
                    count * sizeof(int)]
        cdef Py_ssize_t i, total = 0
        for i in range(10):
            sizes[i] = (sizes[i] + 7) & ~7
            total += sizes[i]
        self.memory = PyMem_Malloc(total)
        if self.memory == NULL:
            raise MemoryError()
        memset(self.memory, 0, total)
        cdef char *cursor = <char *>self.memory
        self.info = <tensor_info *>cursor; cursor += sizes[0]
        self.param_ptr = <void **>cursor; cursor += sizes[1]
        self.grad_ptr = <const void **>cursor; cursor += sizes[2]
        self.state_ptr = <void **>cursor; cursor += sizes[3]
        self.sizes = <int64_t *>cursor; cursor += sizes[4]
        self.offsets = <int64_t *>cursor; cursor += sizes[5]
        self.written_low = <uintptr_t *>cursor; cursor += sizes[6]
        self.written_high = <uintptr_t *>cursor; cursor += sizes[7]
        self.dims = <Py_ssize_t *>cursor; cursor += sizes[8]
        self.dtypes = <int *>cursor
        return 0

    def __init__(self, str kernel, tuple keys, list params, list states, tuple state_names=(),
                 tuple groups=None, tuple grad_dtypes=None, bint master=False,
                 bint stochastic=False, uint64_t seed=0):
        """groups (fastopt.optim): None, or per key the index of its group, 0 <= index < number
        of groups; each group then runs its own kernel and coefficients (run_groups()).
        Mixed precision (fastopt.optim): grad_dtypes, per key the dtype its gradients have
        (None: the parameter's); state arrays may then have their own dtype (float32 or
        bfloat16 for 16-bit or float32 parameters); master: the last state array of each key
        is its float32 master copy; stochastic, seed: round stored 16-bit values
        stochastically (see fastopt_plan in csrc/fastopt.h)."""
        cdef Py_ssize_t i, j, s, n = len(keys)
        cdef cnp.ndarray p, a
        cdef tensor_info *t
        cdef bint fortran
        # Once only: every pointer below is borrowed from, or points into, what this call stores.
        if self.started:
            raise RuntimeError("a Plan is initialised once; build a new one")
        self.started = True
        if len(params) != n or len(states) != n:
            raise ValueError("keys, params and states must have the same length")
        entry = KERNELS[kernel]
        self.kernel = kernel
        self.kernel_id, self.n_states = entry.id, entry.n_states
        self.n_coefficients = len(entry.coefficient_names)
        if groups is not None:
            # each group's kernel takes a prefix of the state arrays (the master copies last)
            self.n_states = len(state_names)
            if self.n_states > FASTOPT_MAX_STATES:
                raise ValueError(f"at most {FASTOPT_MAX_STATES} state arrays")
        if state_names and len(state_names) != self.n_states:
            raise ValueError(f"kernel {kernel} has {self.n_states} states, not {len(state_names)}")
        self.state_names = state_names or tuple(f"state{s}" for s in range(self.n_states))
        self.keys = keys
        self.params = tuple(params)
        self.states = tuple([tuple(group) for group in states])
        targets, staged = [], []

        cdef Py_ssize_t total_dims = 0
        for i in range(n):
            total_dims += cnp.PyArray_NDIM(<cnp.ndarray?>params[i])
            if len(self.states[i]) != self.n_states:
                raise ValueError("wrong number of state arrays")
        self._allocate(n, self.n_states, 2 * total_dims)  # shapes and strides
        self.n = n  # from here on __dealloc__ walks info[0:n]

        cdef Py_ssize_t next_dim = 0
        for i in range(n):
            p = self.params[i]
            t = &self.info[i]
            t.key = <PyObject *>self.keys[i]
            t.param = <PyObject *>p
            t.data = cnp.PyArray_DATA(p)
            t.typenum = cnp.PyArray_TYPE(p)
            t.grad_typenum = t.typenum
            if grad_dtypes is not None:
                t.grad_typenum = np.dtype(grad_dtypes[i]).num
            self.dtypes[i] = _dtype_row(p)
            if self.dtypes[i] < 0 or (DTYPE_CONVERTED[self.dtypes[i]] and groups is None):
                raise TypeError(f"fastopt kernels take arrays of the dtypes {DTYPES}")
            t.ndim = cnp.PyArray_NDIM(p)
            t.dim_start = next_dim
            for j in range(t.ndim):
                self.dims[next_dim + j] = cnp.PyArray_DIM(p, j)
                self.dims[next_dim + t.ndim + j] = cnp.PyArray_STRIDE(p, j)
            next_dim += 2 * t.ndim
            group = self.states[i]
            # The flat order is the state arrays' (they are ours and always contiguous); with no
            # state, the parameter's own if it has one.
            if self.n_states:
                fortran = not cnp.PyArray_IS_C_CONTIGUOUS(group[0])
            else:
                fortran = (not cnp.PyArray_IS_C_CONTIGUOUS(p)) and cnp.PyArray_IS_F_CONTIGUOUS(p)
            for s in range(self.n_states):
                a = group[s]
                # kernels trust the plan: a state array of another size would be overrun
                if (not _direct(a, fortran) or _dtype_row(a) < 0
                        or (cnp.PyArray_TYPE(a) != t.typenum and groups is None)
                        or cnp.PyArray_SIZE(a) != cnp.PyArray_SIZE(p)):
                    raise ValueError("state arrays must be contiguous, aligned and of the "
                                     "parameter's dtype and size")
                self.state_ptr[s * n + i] = cnp.PyArray_DATA(a)
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

        self.targets = tuple(targets)
        self.staged = tuple(staged)
        self.offsets[0] = 0
        for i in range(n):
            self.offsets[i + 1] = self.offsets[i] + self.sizes[i]
        self.plan.n_tensors = n
        self.plan.offset = self.offsets
        self.plan.cost = fastopt_estimate_cost(self.kernel_id, n, self.sizes, self.dtypes)
        self.plan.samples[:] = [0, 0]
        self.plan.mean_seconds[:] = [0.0, 0.0]
        self.plan.last_seconds[:] = [0.0, 0.0]
        self.plan.seconds_since_other = 0.0
        self.plan.warm = 0
        self.plan.better = 0
        self.plan.burst_mode = 0
        self.plan.burst_left = 0
        self.plan.burst_seconds = 0.0
        self.plan.dtype = self.dtypes
        self.plan.param = self.param_ptr
        self.plan.grad = self.grad_ptr
        self.plan.state = self.state_ptr
        self.plan.n_states = self.n_states
        self.plan.group = NULL
        self._set_precision(grad_dtypes, master, stochastic, seed)
        if groups is not None:
            if len(groups) != n or any(not 0 <= group < n for group in groups):
                raise ValueError("groups: one index per key, each in [0, number of keys)")
            self.groups = groups
            self.n_groups = max(groups) + 1 if n else 1
            self.group_of_tensor = <int *>PyMem_Malloc(max(n, 1) * sizeof(int))
            self.group_kernels = <int *>PyMem_Malloc(self.n_groups * sizeof(int))
            self.group_coefficients = <double *>PyMem_Malloc(
                self.n_groups * FASTOPT_MAX_COEFFICIENTS * sizeof(double))
            if (self.group_of_tensor == NULL or self.group_kernels == NULL
                    or self.group_coefficients == NULL):
                raise MemoryError()
            for i in range(n):
                self.group_of_tensor[i] = groups[i]
            self.plan.group = self.group_of_tensor

        self.written = list(self.params) + [self.states[i][s] for s in range(self.n_states)
                                            for i in range(n)]
        self.overlap = self._written_overlap()
        self._build_written_ranges()
        self.ready = self.overlap is None

    cdef int _set_precision(self, tuple grad_dtypes, bint master, bint stochastic,
                            uint64_t seed) except -1:
        """The mixed-precision fields of the C plan (see Plan.__init__)."""
        cdef Py_ssize_t i, s, n = self.n
        cdef bint mixed = master
        self.plan.mixed = 0
        self.plan.grad_dtype = NULL
        self.plan.state_dtype = NULL
        self.plan.master = master
        self.plan.stochastic = stochastic
        self.plan.seed = seed
        self.plan.step = 0
        self.grad_dtypes = <int *>PyMem_Malloc(max(n, 1) * sizeof(int))
        self.state_dtypes = <int *>PyMem_Malloc(max(n * self.n_states, 1) * sizeof(int))
        if self.grad_dtypes == NULL or self.state_dtypes == NULL:
            raise MemoryError()
        for i in range(n):
            self.grad_dtypes[i] = self.dtypes[i]
            if grad_dtypes is not None:
                self.grad_dtypes[i] = dtype_row(grad_dtypes[i])
                if self.grad_dtypes[i] < 0:
                    raise TypeError(f"gradient dtype {grad_dtypes[i]} is not one the kernels "
                                    f"take")
            mixed |= DTYPE_CONVERTED[self.dtypes[i]] or self.grad_dtypes[i] != self.dtypes[i]
            for s in range(self.n_states):
                self.state_dtypes[s * n + i] = _dtype_row(<cnp.ndarray>self.states[i][s])
                mixed |= self.state_dtypes[s * n + i] != self.dtypes[i]
            # The kernels trust these: a float64 tensor runs the float64 loop on float64
            # gradient and state; every other one the mixed runner, which reads 16-bit and
            # float32 arrays only; a master copy is float32.
            rows = [self.grad_dtypes[i]] + [self.state_dtypes[s * n + i]
                                            for s in range(self.n_states)]
            if (self.dtypes[i] == _FLOAT64_ROW) != all(row == _FLOAT64_ROW for row in rows) or \
                    (self.dtypes[i] != _FLOAT64_ROW and _FLOAT64_ROW in rows) or \
                    (master and rows[len(rows) - 1] != _FLOAT32_ROW):
                raise TypeError(f"{self.keys[i]!r}: gradient and state dtypes do not fit a "
                                f"{DTYPE_NAMES[self.dtypes[i]]} parameter")
        if mixed:
            self.plan.mixed = 1
            self.plan.grad_dtype = self.grad_dtypes
            self.plan.state_dtype = self.state_dtypes
        return 0

    def written_name(self, Py_ssize_t index):
        """The name of written array index: "params[key]" or "optimizer state v[key]"."""
        if index < self.n:
            return f"params[{self.keys[index]!r}]"
        state, key = divmod(index - self.n, self.n)
        return f"optimizer state {self.state_names[state]}[{self.keys[key]!r}]"

    cdef object _written_overlap(self):
        """The names of the first two written arrays that share memory, or None."""
        for first, second in bounds_overlapping(self.written):
            if np.shares_memory(self.written[first], self.written[second]):
                return self.written_name(first), self.written_name(second)
        return None

    cdef _build_written_ranges(self):
        """Sorted, merged byte ranges of every parameter and state array, so that a gradient's
        possible overlap with any of them is a binary search."""
        ranges = []
        cdef uintptr_t low, high
        cdef Py_ssize_t i
        for a in self.written:
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
        for i in range(self.n_written):
            self.written_low[i] = merged[i][0]
            self.written_high[i] = merged[i][1]

    cdef bint _may_overlap_written(self, cnp.ndarray a):
        """Do a's bytes fall within any written array's extent? (Conservative: a strided view
        interleaved with a parameter can, without sharing memory.)"""
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

    cdef Py_ssize_t _overlapping_written(self, cnp.ndarray a) except -2:
        """The index of the first written array that shares memory with a, or -1. Exact:
        numpy.shares_memory on the arrays whose extents intersect a's."""
        for first, second in bounds_overlapping(self.written + [a]):
            if second == len(self.written) and np.shares_memory(self.written[first], a):
                return first
        return -1

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
        # Staged: copied in and out through its strides, which must be the validated ones.
        cdef int d
        for d in range(t.ndim):
            if cnp.PyArray_STRIDE(p, d) != self.dims[t.dim_start + t.ndim + d]:
                return False
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
        """How the two modes fared on this plan, for diagnostics, each as (one thread, pool):
        steps measured, their mean and latest time (seconds); and the time spent in the better
        mode since the other one's last burst (see choose_mode in csrc/engine.c)."""
        return {"steps": (self.plan.samples[0], self.plan.samples[1]),
                "mean_seconds": (self.plan.mean_seconds[0], self.plan.mean_seconds[1]),
                "last_seconds": (self.plan.last_seconds[0], self.plan.last_seconds[1]),
                "seconds_since_other": self.plan.seconds_since_other}

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

    def bound_sum_of_squares(self):
        """(sum of the squares of every gradient element, in double; any NaN or infinity?) over
        the gradients of the step in progress (fastopt.optim calls it from inside a step, while
        the gradients are bound), in the plan's flat order of each key: the reduction pass of
        csrc/fastopt.h, bit-identical for every SIMD path and thread count."""
        cdef Py_ssize_t i
        cdef int nonfinite = 0
        cdef double total
        if not self.busy:
            raise RuntimeError("bound_sum_of_squares() is for a step in progress")
        for i in range(self.n):
            if self.info[i].grad == NULL:
                raise RuntimeError("bound_sum_of_squares() is for a step in progress")
        cdef double *block_sums = <double *>PyMem_Malloc(
            max(fastopt_reduce_blocks(self.offsets[self.n]), 1) * sizeof(double))
        if block_sums == NULL:
            raise MemoryError()
        try:
            with nogil:
                total = fastopt_sum_of_squares(&self.plan, block_sums, &nonfinite)
        finally:
            PyMem_Free(block_sums)
        return total, bool(nonfinite)

    cdef int _set_groups(self, object kernels, object coefficients) except -1:
        """This step's kernel ids per group (each with at most the plan's state arrays) and
        coefficients (per group, a sequence of at most MAX_COEFFICIENTS doubles, in its kernel's
        order)."""
        cdef Py_ssize_t g, i
        cdef int kernel
        cdef const fastopt_kernel_info *info
        if self.group_kernels == NULL:
            raise ValueError("this plan was built without groups")
        if len(kernels) != self.n_groups or len(coefficients) != self.n_groups:
            raise ValueError(f"this plan has {self.n_groups} groups")
        for g in range(self.n_groups):
            kernel = kernels[g]
            info = fastopt_kernel(kernel)
            if info == NULL or info.n_states > self.n_states:
                raise ValueError(f"kernel {kernel} does not fit this plan's state arrays")
            values = coefficients[g]
            if len(values) != info.n_coefficients:
                raise ValueError(f"kernel {info.name.decode()} takes {info.n_coefficients} "
                                 f"coefficients, got {len(values)}")
            self.group_kernels[g] = kernel
            for i in range(info.n_coefficients):
                self.group_coefficients[g * FASTOPT_MAX_COEFFICIENTS + i] = values[i]
        return 0

    cdef void _run_bound_groups(self):
        """Run the bound step with the groups' kernels and coefficients (_set_groups), staged
        parameters copied in and out through NumPy's C API (no Python code)."""
        cdef Py_ssize_t i
        for i in self.staged:
            cnp.PyArray_CopyInto(<cnp.ndarray>self.targets[i], <cnp.ndarray>self.params[i])
        with nogil:
            fastopt_run_groups(self.group_kernels, &self.plan, self.group_coefficients)
        for i in self.staged:
            cnp.PyArray_CopyInto(<cnp.ndarray>self.params[i], <cnp.ndarray>self.targets[i])

    def step(self, params, grads, coefficients):
        """Run one step if params and grads fit this plan: return STEP_RAN (0), or a DECLINED_*
        reason (declined_index and overlapping_index say which key and array), having modified
        nothing.

        coefficients: a tuple or list of this step's scalars in double, as many as the kernel
        has, in the order of KERNELS[kernel].coefficient_names (ValueError otherwise).
        """
        return self._run(params, grads, coefficients)

    cdef int _run(self, object params, object grads, object coefficients) except -1:
        """step(), for Cython callers. Between its start and its return no Python code runs
        (no bytecode: a signal handler cannot interrupt it), except reading the coefficients
        and the keys' hash and equality, before anything is written."""
        cdef double c[FASTOPT_MAX_COEFFICIENTS]
        cdef Py_ssize_t i
        cdef int reason
        if self.busy:
            raise RuntimeError(_BUSY_MESSAGE)
        # Busy from here: what follows may run Python code (reading coefficients), and another
        # thread must not get in and rebind the pointers meanwhile.
        self.busy = True
        try:
            if not self.ready:
                return _DECLINED_NOT_READY
            # Exactly dicts: a subclass may answer d[key] with another object than the one it
            # stores (which is what the walk below reads), so it goes through validation.
            if not (PyDict_CheckExact(params) and PyDict_CheckExact(grads)
                    and len(<dict>params) == self.n and len(<dict>grads) == self.n):
                return _DECLINED_STRUCTURE
            if len(coefficients) != self.n_coefficients:
                raise ValueError(f"this kernel takes {self.n_coefficients} coefficients, "
                                 f"got {len(coefficients)}")
            for i in range(self.n_coefficients):
                c[i] = coefficients[i]
            reason = self._bind_grads(<dict>params, <dict>grads)
            if reason != _STEP_RAN:
                return reason
            # Staged parameters are copied in and out through NumPy's C API, not np.copyto:
            # calling into Python between the kernel and the copy back would let a signal
            # handler (Ctrl-C) leave the state updated and the parameter not.
            for i in self.staged:
                cnp.PyArray_CopyInto(<cnp.ndarray>self.targets[i], <cnp.ndarray>self.params[i])
            with nogil:
                fastopt_run(self.kernel_id, &self.plan, c)
            for i in self.staged:
                cnp.PyArray_CopyInto(<cnp.ndarray>self.params[i], <cnp.ndarray>self.targets[i])
        finally:
            self._release_grads()
            self.busy = False
        return _STEP_RAN

    cdef int _bind_grads(self, dict params, dict grads) except -1:
        """Check every key's parameter and gradient; point the plan at the gradients, holding a
        reference to each until _release_grads(). STEP_RAN if all fit, else the reason."""
        cdef Py_ssize_t i, param_position = 0, grad_position = 0
        cdef PyObject *item
        cdef cnp.ndarray g
        cdef tensor_info *t
        cdef bint direct
        for i in range(self.n):
            t = &self.info[i]
            self.declined_index = i
            item = self._lookup(params, i, &param_position)
            if item == NULL or not self._param_unchanged(i, item):
                return _DECLINED_PARAM
            item = self._lookup(grads, i, &grad_position)
            # Exactly an ndarray: subclasses (masked arrays, matrices) go through validation.
            if item == NULL or not cnp.PyArray_CheckExact(<object>item):
                return _DECLINED_GRAD
            g = <cnp.ndarray>item
            if cnp.PyArray_TYPE(g) != t.grad_typenum or not cnp.PyArray_ISNOTSWAPPED(g):
                return _DECLINED_GRAD
            if not _has_shape(t, self.dims, g):
                return _DECLINED_GRAD
            direct = _direct(g, t.fortran)
            # A contiguous gradient's bytes are [data, data + size * itemsize): the same data
            # pointer as a gradient that passed the test before means the same verdict.
            if not (direct and cnp.PyArray_DATA(g) == t.checked_grad):
                if self._may_overlap_written(g):
                    self.overlapping_index = self._overlapping_written(g)
                    if self.overlapping_index >= 0:
                        return _DECLINED_OVERLAP
                if direct:
                    t.checked_grad = cnp.PyArray_DATA(g)
            if not direct:
                g = np.array(g, order="F" if t.fortran else "C", copy=True)
            Py_XINCREF(<PyObject *>g)
            t.grad = <PyObject *>g
            self.grad_ptr[i] = cnp.PyArray_DATA(g)
        self.declined_index = -1
        return _STEP_RAN


# ---- the optimizer's core ----------------------------------------------------------------------

@cython.final
cdef class Core:
    """What one optimizer's update() changes, kept together: the step counter, the state and
    the plan (each fastopt.optimizers.Optimizer holds one, as _core). update() below and the
    slow path (Optimizer._validate_and_step, which holds the core) are the only writers; see
    update() for the guarantees."""
    cdef readonly int64_t step   # steps taken
    cdef readonly object state   # None, or the optimizer's state (its own structure)
    cdef readonly object plan    # None, or the Plan of the last step
    cdef readonly object scalars  # None, or the optimizer's scalar state (fastopt.optim)
    cdef readonly int64_t skipped  # steps skipped for non-finite gradients (fastopt.optim)
    cdef bint busy

    def __cinit__(self):
        self.step = 0
        self.state = None
        self.plan = None
        self.scalars = None
        self.skipped = 0
        self.busy = False

    def drop_plan(self):
        """Forget the plan (the hyperparameters' types changed: the next update() validates
        and plans afresh). A step running in another thread keeps its own reference."""
        self.plan = None

    def hold(self):
        """Mark the core busy for a change that must not overlap an update (the slow path,
        reset, load_state_dict): RuntimeError if it is busy already. Pair with release() in a
        finally."""
        if self.busy:
            raise RuntimeError(_BUSY_MESSAGE)
        self.busy = True

    def release(self):
        self.busy = False

    def commit(self, Plan plan, state, params, grads, coefficients, int64_t step):
        """For the holder of the core: run plan on the validated params and grads; if it ran,
        make plan, state and step the optimizer's (with no Python code since the kernel) and
        return STEP_RAN, else return the plan's reason (nothing changed)."""
        if not self.busy:
            raise RuntimeError("Core.commit() needs hold()")
        cdef int reason = plan._run(params, grads, coefficients)
        if reason == _STEP_RAN:
            self.plan = plan
            self.state = state
            self.step = step
        return reason

    def replace(self, int64_t step, state, scalars=None, int64_t skipped=0):
        """For the holder of the core: a new step count, state, scalar state and count of
        skipped steps, and no plan (reset(), load_state_dict())."""
        if not self.busy:
            raise RuntimeError("Core.replace() needs hold()")
        if step < 0 or skipped < 0:
            raise ValueError("the step count must be >= 0")
        self.step = step
        self.state = state
        self.scalars = scalars
        self.skipped = skipped
        self.plan = None

    def commit_groups(self, Plan plan, state, optimizer, params, grads, int64_t step,
                      grad_scale, max_grad_norm):
        """For the holder of the core (fastopt.optim's slow path): _groups_step below with a
        plan and state that become the optimizer's if the step runs. Returns (reason, norm)."""
        if not self.busy:
            raise RuntimeError("Core.commit_groups() needs hold()")
        cdef int reason = _STEP_RAN
        norm = _groups_step(self, plan, state, optimizer, params, grads, step, grad_scale,
                            max_grad_norm, &reason)
        return reason, norm


cdef object _groups_step(Core core, Plan plan, object state, object optimizer, object params,
                         object grads, int64_t step, object grad_scale, object max_grad_norm,
                         int *reason):
    """One fastopt.optim step on plan, for a caller holding core: bind the gradients, ask
    optimizer._plan_step(plan, step, grad_scale, max_grad_norm) for this step's kernels and
    coefficients per group (it may run the reduction pass, plan.bound_sum_of_squares()), run
    them, and commit: plan, state, step and scalar state become the optimizer's with no Python
    code after the kernel. _plan_step returns (kernels, coefficients, norm, scalars); kernels
    None skips the step (non-finite gradients): only core.skipped changes. Returns the norm;
    *reason is STEP_RAN, or why the plan declined (nothing changed)."""
    if plan.busy:
        raise RuntimeError(_BUSY_MESSAGE)
    plan.busy = True
    try:
        if not plan.ready:
            reason[0] = _DECLINED_NOT_READY
            return None
        if not (PyDict_CheckExact(params) and PyDict_CheckExact(grads)
                and len(<dict>params) == plan.n and len(<dict>grads) == plan.n):
            reason[0] = _DECLINED_STRUCTURE
            return None
        reason[0] = plan._bind_grads(<dict>params, <dict>grads)
        if reason[0] != _STEP_RAN:
            return None
        kernels, coefficients, norm, scalars = optimizer._plan_step(plan, step, grad_scale,
                                                                    max_grad_norm)
        if kernels is None:
            core.skipped += 1
            return norm
        plan._set_groups(kernels, coefficients)
        plan.plan.step = <uint64_t>step
        plan._run_bound_groups()
        core.plan = plan
        core.state = state
        core.scalars = scalars
        core.step = step
        return norm
    finally:
        plan._release_grads()
        plan.busy = False


def update_groups(optimizer, params, grads, grad_scale=None, max_grad_norm=None):
    """Apply one step to every array in params, in place; return the global gradient norm
    (a Python float) when it was computed (max_grad_norm or skip_nonfinite), else None.

    params: dict of name -> writeable float32, float64, float16 or bfloat16 (ml_dtypes)
    numpy.ndarray (native byte order, any shape and layout), updated in place. grads: dict with
    the same names -> arrays of the same shape and of the parameter's dtype (or float16 or
    bfloat16 for a float32 parameter), never modified. The first update() creates the state for
    exactly these keys (reset() to change them). 16-bit values are computed in float32 and
    rounded once when stored (see the optimizer's rounding, state_dtype and master_weights).
    grad_scale: None, or a finite number every gradient is multiplied by before anything else
      (e.g. 1/loss_scale); the norm is that of the scaled gradients.
    max_grad_norm: None, or a number > 0: the gradients (scaled) are also multiplied by
      min(1, max_grad_norm / (norm + 1e-6)), torch.nn.utils.clip_grad_norm_'s rule, with norm
      the Euclidean norm of all gradients together, accumulated in double in a fixed order
      (the same bits for any thread count and SIMD path; fastopt.global_norm's).
    With skip_nonfinite=True (constructor), a step whose gradients hold a NaN or an infinity
    (or whose norm overflows) changes nothing but skipped_steps, and returns the norm.

    All or nothing: an update() that raises has modified nothing, and one interrupted by
    Ctrl-C has made the whole step or none of it. Raises TypeError and ValueError as
    fastopt.Optimizer.update does (naming the key), for a bad grad_scale or max_grad_norm, or
    for an lr schedule that returns a negative or non-finite value; RuntimeError if another
    thread is running update() on this optimizer.
    """
    cdef Core core = optimizer._core
    cdef int reason = _STEP_RAN
    if core.busy:
        raise RuntimeError(_BUSY_MESSAGE)
    if core.step == INT64_MAX:
        raise OverflowError("the step counter is at its maximum, 2**63 - 1")
    optimizer._check_step_arguments(grad_scale, max_grad_norm)
    core.busy = True
    try:
        plan = core.plan  # a reference of our own while it runs
        if plan is not None:
            norm = _groups_step(core, <Plan>plan, core.state, optimizer, params, grads,
                                core.step + 1, grad_scale, max_grad_norm, &reason)
            if reason == _STEP_RAN:
                return norm
    finally:
        core.busy = False
    return optimizer._validate_and_step(params, grads, grad_scale, max_grad_norm)


def update(optimizer, params, grads):
    """Apply one step to every array in params, in place; return None.

    params: dict of name -> writeable float32 or float64 numpy.ndarray (native byte order, any
    shape and layout), updated in place. grads: dict with the same names -> arrays of the same
    shape and dtype (a NumPy float scalar for a 0-d parameter), never modified. The first
    update() creates the optimizer state for exactly the keys of params.

    All or nothing: an update() that raises has modified nothing (parameters, state, step
    count), and one interrupted by Ctrl-C (KeyboardInterrupt) has made the whole step or none
    of it: the step count (and, at the first step or after a change of arrays, the state and
    the plan) become the optimizer's in compiled code right after the kernel ran, with no
    Python code in between.
    Raises:
    - TypeError: params or grads is not a dict; a value is not a numpy.ndarray (or is a masked
      array or numpy.matrix); a dtype is not float32/float64 in native byte order; a
      gradient's dtype differs from its parameter's; a NumPy-scalar hyperparameter is wider
      than the arrays (a numpy.float64 lr with float32 params: see the README).
    - ValueError: the keys of params and grads differ; a shape differs; a parameter is
      read-only; two arrays the step writes or reads share memory; a key has no optimizer
      state (added after the first update(): see reset()) or its state's shape or dtype
      differs from the parameter's.
    - RuntimeError: another thread is running update() on this optimizer (one optimizer per
      thread, or a lock around update()). That call completes; this one changes nothing, so no
      step is lost and no state is created twice.
    """
    # The hot path (Optimizer.update is this function): the current plan runs if params and
    # grads fit it, else the optimizer validates, builds a plan and commits through the core.
    cdef Core core = optimizer._core
    if core.busy:
        raise RuntimeError(_BUSY_MESSAGE)
    if core.step == INT64_MAX:
        raise OverflowError("the step counter is at its maximum, 2**63 - 1")
    core.busy = True
    try:
        step = core.step + 1
        coefficients = optimizer._coefficients(step)
        plan = core.plan  # a reference of our own while it runs
        if plan is not None and (<Plan>plan)._run(params, grads, coefficients) == _STEP_RAN:
            core.step = step  # no Python code since the kernel ran
            return
    finally:
        core.busy = False
    optimizer._validate_and_step(params, grads)


_BUSY_MESSAGE = ("this optimizer is running update() in another thread; use one optimizer per "
                 "thread (or a lock around update())")
