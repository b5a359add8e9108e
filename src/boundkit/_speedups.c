/* boundkit._speedups: the optional C accelerator of boundkit.cache and boundkit._sizes.
 *
 * CacheLookups is a base class of BoundedCache whose __getitem__ and get() do a
 * hit in C: one dict lookup, a clock read, OrderedDict.move_to_end and a hit
 * counted in a C field, all under the GIL and without running Python code
 * (unless the timer is written in Python). A miss is counted here too and goes
 * to __missing__ (cache[key]) or returns the default (get()). An expired entry
 * or anything unusual goes to the Python methods that hold the semantics:
 * _locked_getitem() and _lookup() (boundkit/_cache_core.py).
 *
 * flat_size() sizes a flat value (str, bytes, bytearray, numbers, None) or a
 * small dict, list, tuple, set or frozenset of flat values exactly as the
 * pure-Python fast path in boundkit/_sizes.py does, or returns None.
 * instance_size() does the walker's step (_Estimate.measure) on an instance, and
 * add_items() its loop over the items of a list, tuple or dict, container_size()
 * its step on a small list, tuple or dict.
 *
 * Plain CPython C API; built by setup.py as an optional extension.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <time.h>

/* -- configuration, set once by set_entry_type() and set_flat_limits() ------ */

static PyTypeObject *entry_type;      /* boundkit._cache_core.Entry */
static Py_ssize_t value_offset;       /* where an Entry keeps its `value` slot */
static PyObject *monotonic_func;      /* time.monotonic, read directly on Linux */
static Py_ssize_t gc_header;          /* what sys.getsizeof adds for a GC-tracked object */
static Py_ssize_t max_flat_items;     /* a container with more items is left to the walker */
static int configured;                /* set_flat_limits() was called */

static PyObject *str_missing;         /* "__missing__" */
static PyObject *str_locked_getitem;  /* "_locked_getitem" */
static PyObject *str_lookup;          /* "_lookup" */
static PyObject *str_sizeof;          /* "__sizeof__" */

/* instance_size(): the types an instance's attributes may not be (set_flat_limits()),
 * how many attributes it sizes itself, and how many referents it reads at most. */
static PyObject *shared_types;
static Py_ssize_t sample_above;
#define INSTANCE_REFERENTS 64

/* The flat types, and their __sizeof__ method descriptors. */
#define N_FLAT 8
static PyTypeObject *flat_types[N_FLAT];
static PyObject *flat_sizeof[N_FLAT];
/* __sizeof__ of the containers flat_size() reads. */
static PyObject *dict_sizeof, *list_sizeof, *tuple_sizeof, *set_sizeof, *frozenset_sizeof;

#if defined(__linux__)
/* time.monotonic() without the call: CLOCK_MONOTONIC converted as CPython does. */
static double
read_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long long t = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    if (t % 1000000000LL == 0) {
        return (double)(t / 1000000000LL);
    }
    volatile double d = (double)t;
    d /= 1e9;
    return d;
}
#endif

/* -- CacheLookups ------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *data;     /* _data: the OrderedDict of Entry */
    PyObject *refresh;  /* _refresh: data.move_to_end */
    PyObject *timer;    /* _timer */
    PyObject *timed;    /* _timed: False unless entries can expire */
    Py_ssize_t hits;    /* _c_hits */
    Py_ssize_t misses;  /* _c_misses */
} Lookups;

enum { LOOKUP_ERROR = -1, LOOKUP_MISS = 0, LOOKUP_HIT = 1, LOOKUP_SLOW = 2 };

/* Look key up lock-free. A hit refreshes recency, counts itself and sets *value
 * (a new reference); a miss counts itself. LOOKUP_SLOW: the entry has expired
 * or is unusual, nothing was counted, the Python slow path decides. */
static int
fast_lookup(Lookups *self, PyObject *key, PyObject **value)
{
    PyObject *data = self->data;
    if (data == NULL || !PyDict_Check(data) || self->timed == NULL || entry_type == NULL) {
        return LOOKUP_SLOW;
    }
    Py_INCREF(data);  /* a key's Python __eq__ could replace _data meanwhile */
    PyObject *entry = PyDict_GetItemWithError(data, key);
    Py_DECREF(data);
    if (entry == NULL) {
        if (PyErr_Occurred()) {
            return LOOKUP_ERROR;
        }
        self->misses++;
        return LOOKUP_MISS;
    }
    if (self->timed != Py_False) {
#if defined(__linux__)
        if (self->timer == monotonic_func) {
            /* The clock read waits for every load before it: fetch the entry meanwhile. */
            __builtin_prefetch(entry);
            double now = read_monotonic();
            if (Py_TYPE(entry) != entry_type) {
                return LOOKUP_SLOW;
            }
            if (now >= PyFloat_AS_DOUBLE(entry)) {
                return LOOKUP_SLOW;
            }
            Py_INCREF(entry);
        }
        else
#endif
        {
            if (Py_TYPE(entry) != entry_type) {
                return LOOKUP_SLOW;
            }
            Py_INCREF(entry);
            if (self->timer == NULL) {
                Py_DECREF(entry);
                return LOOKUP_SLOW;
            }
            PyObject *timer = self->timer;
            Py_INCREF(timer);
            PyObject *now = PyObject_CallNoArgs(timer);
            Py_DECREF(timer);
            if (now == NULL) {
                Py_DECREF(entry);
                return LOOKUP_ERROR;
            }
            int expired;
            if (PyFloat_CheckExact(now)) {
                expired = PyFloat_AS_DOUBLE(now) >= PyFloat_AS_DOUBLE(entry);
            }
            else {
                expired = PyObject_RichCompareBool(now, entry, Py_GE);
            }
            Py_DECREF(now);
            if (expired != 0) {
                Py_DECREF(entry);
                return expired < 0 ? LOOKUP_ERROR : LOOKUP_SLOW;
            }
        }
    }
    else {
        if (Py_TYPE(entry) != entry_type) {
            return LOOKUP_SLOW;
        }
        Py_INCREF(entry);
    }
    PyObject *refresh = self->refresh;
    if (refresh == NULL) {  /* only a Python timer can have removed it */
        Py_DECREF(entry);
        return LOOKUP_SLOW;
    }
    Py_INCREF(refresh);
    PyObject *done = PyObject_Vectorcall(refresh, &key, 1, NULL);
    Py_DECREF(refresh);
    if (done == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_KeyError)) {
            Py_DECREF(entry);
            return LOOKUP_ERROR;
        }
        PyErr_Clear();  /* removed by another thread since the lookup: this hit came first */
    }
    else {
        Py_DECREF(done);
    }
    PyObject *found = *(PyObject **)((char *)entry + value_offset);
    if (found == NULL) {
        Py_DECREF(entry);
        return LOOKUP_SLOW;
    }
    self->hits++;
    Py_INCREF(found);
    Py_DECREF(entry);
    *value = found;
    return LOOKUP_HIT;
}

static PyObject *
lookups_subscript(Lookups *self, PyObject *key)
{
    PyObject *value = NULL;
    switch (fast_lookup(self, key, &value)) {
    case LOOKUP_HIT:
        return value;
    case LOOKUP_MISS:
        return PyObject_CallMethodOneArg((PyObject *)self, str_missing, key);
    case LOOKUP_SLOW:
        return PyObject_CallMethodOneArg((PyObject *)self, str_locked_getitem, key);
    default:
        return NULL;
    }
}

static PyObject *
lookups_get(Lookups *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *key = nargs > 0 ? args[0] : NULL;
    PyObject *dflt = nargs > 1 ? args[1] : NULL;
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    if (nargs > 2) {
        PyErr_Format(PyExc_TypeError, "get() takes at most 2 arguments (%zd given)", nargs);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        PyObject **slot;
        if (PyUnicode_CompareWithASCIIString(name, "key") == 0) {
            slot = &key;
        }
        else if (PyUnicode_CompareWithASCIIString(name, "default") == 0) {
            slot = &dflt;
        }
        else {
            PyErr_Format(PyExc_TypeError, "get() got an unexpected keyword argument '%U'", name);
            return NULL;
        }
        if (*slot != NULL) {
            PyErr_Format(PyExc_TypeError, "get() got multiple values for argument '%U'", name);
            return NULL;
        }
        *slot = args[nargs + i];
    }
    if (key == NULL) {
        PyErr_SetString(PyExc_TypeError, "get() missing required argument 'key'");
        return NULL;
    }
    if (dflt == NULL) {
        dflt = Py_None;
    }
    PyObject *value = NULL;
    switch (fast_lookup(self, key, &value)) {
    case LOOKUP_HIT:
        return value;
    case LOOKUP_MISS:
        Py_INCREF(dflt);
        return dflt;
    case LOOKUP_SLOW:
        return PyObject_CallMethodObjArgs((PyObject *)self, str_lookup, key, dflt, NULL);
    default:
        return NULL;
    }
}

static int
lookups_traverse(Lookups *self, visitproc visit, void *arg)
{
    Py_VISIT(self->data);
    Py_VISIT(self->refresh);
    Py_VISIT(self->timer);
    Py_VISIT(self->timed);
    return 0;
}

static int
lookups_clear(Lookups *self)
{
    Py_CLEAR(self->data);
    Py_CLEAR(self->refresh);
    Py_CLEAR(self->timer);
    Py_CLEAR(self->timed);
    return 0;
}

static void
lookups_dealloc(Lookups *self)
{
    /* a static base type: subtype_dealloc releases the heap subclass itself */
    PyObject_GC_UnTrack(self);
    lookups_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* object.__new__, which (on CPython 3.11) also sets up a Python subclass's inline
 * attribute values: without them its attributes live in a real dict, slower to read. */
static PyObject *
lookups_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *no_args = PyTuple_New(0);
    if (no_args == NULL) {
        return NULL;
    }
    PyObject *self = PyBaseObject_Type.tp_new(type, no_args, NULL);
    Py_DECREF(no_args);
    return self;
}

static PyMemberDef lookups_members[] = {
    {"_data", T_OBJECT_EX, offsetof(Lookups, data), 0, "the entries, least recently used first"},
    {"_refresh", T_OBJECT_EX, offsetof(Lookups, refresh), 0, "_data.move_to_end"},
    {"_timer", T_OBJECT_EX, offsetof(Lookups, timer), 0, "the clock"},
    {"_timed", T_OBJECT_EX, offsetof(Lookups, timed), 0, "False unless entries can expire"},
    {"_c_hits", T_PYSSIZET, offsetof(Lookups, hits), READONLY, "hits counted in C"},
    {"_c_misses", T_PYSSIZET, offsetof(Lookups, misses), READONLY, "misses counted in C"},
    {NULL},
};

static PyMethodDef lookups_methods[] = {
    {"get", (PyCFunction)(void (*)(void))lookups_get, METH_FASTCALL | METH_KEYWORDS,
     "get($self, key, default=None, /)\n--\n\n"
     "Return the value under ``key`` (refreshing its recency), or ``default``."},
    {NULL},
};

static PyMappingMethods lookups_as_mapping = {
    .mp_subscript = (binaryfunc)lookups_subscript,
};

static PyTypeObject LookupsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "boundkit._speedups.CacheLookups",
    .tp_doc = "The lock-free hit path of BoundedCache, in C.",
    .tp_basicsize = sizeof(Lookups),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = lookups_new,
    .tp_dealloc = (destructor)lookups_dealloc,
    .tp_traverse = (traverseproc)lookups_traverse,
    .tp_clear = (inquiry)lookups_clear,
    .tp_as_mapping = &lookups_as_mapping,
    .tp_members = lookups_members,
    .tp_methods = lookups_methods,
};

/* -- flat_size ---------------------------------------------------------------- */

/* obj.__sizeof__() through a method descriptor; -1 on error. */
static Py_ssize_t
call_sizeof(PyObject *descr, PyObject *obj)
{
    PyObject *result = PyObject_Vectorcall(descr, &obj, 1, NULL);
    if (result == NULL) {
        return -1;
    }
    Py_ssize_t size = PyLong_AsSsize_t(result);
    Py_DECREF(result);
    return size;
}

/* The rounded size of a flat item; -2 when it is not flat, -1 on error. */
static Py_ssize_t
flat_item_size(PyObject *item)
{
    PyTypeObject *tp = Py_TYPE(item);
    Py_ssize_t size;
    if (tp == &PyUnicode_Type && PyUnicode_IS_COMPACT_ASCII(item)
#if PY_VERSION_HEX < 0x030C0000
        && ((PyASCIIObject *)item)->wstr == NULL
#endif
    ) {
        size = (Py_ssize_t)sizeof(PyASCIIObject) + PyUnicode_GET_LENGTH(item) + 1;
    }
    else if (tp == &PyBytes_Type || tp == &PyFloat_Type) {
        size = tp->tp_basicsize + Py_SIZE(item) * tp->tp_itemsize;
    }
    else {
        int i = 0;
        while (i < N_FLAT && flat_types[i] != tp) {
            i++;
        }
        if (i == N_FLAT) {
            return -2;
        }
        size = call_sizeof(flat_sizeof[i], item);
        if (size < 0) {
            return -1;
        }
    }
    return (size + 7) & ~(Py_ssize_t)7;
}

/* Items met more than once are counted once: those something else may reference
 * (a reference count above `unshared`) are remembered here. */
typedef struct {
    Py_ssize_t count;
    PyObject *items[256];
} Seen;

/* Add item's size to *total; 0 when done, -2 when it is not flat, -1 on error. */
static int
add_item(PyObject *item, Py_ssize_t unshared, Seen *seen, Py_ssize_t *total)
{
    Py_ssize_t size = flat_item_size(item);
    if (size < 0) {
        return (int)size;
    }
    if (Py_REFCNT(item) > unshared) {
        for (Py_ssize_t i = 0; i < seen->count; i++) {
            if (seen->items[i] == item) {
                return 0;
            }
        }
        seen->items[seen->count++] = item;
    }
    *total += size;
    return 0;
}

static PyObject *
flat_size(PyObject *module, PyObject *obj)
{
    if (!configured) {
        PyErr_SetString(PyExc_RuntimeError, "boundkit._speedups is not configured");
        return NULL;
    }
    PyTypeObject *tp = Py_TYPE(obj);
    PyObject *own_sizeof;
    if (tp == &PyDict_Type) {
        own_sizeof = dict_sizeof;
    }
    else if (tp == &PyList_Type) {
        own_sizeof = list_sizeof;
    }
    else if (tp == &PyTuple_Type) {
        own_sizeof = tuple_sizeof;
    }
    else if (tp == &PySet_Type) {
        own_sizeof = set_sizeof;
    }
    else if (tp == &PyFrozenSet_Type) {
        own_sizeof = frozenset_sizeof;
    }
    else {
        Py_ssize_t size = flat_item_size(obj);
        if (size == -1) {
            return NULL;
        }
        if (size == -2) {
            Py_RETURN_NONE;
        }
        return PyLong_FromSsize_t(size);
    }
    if (PyObject_Length(obj) > max_flat_items) {
        Py_RETURN_NONE;
    }
    Py_ssize_t total = call_sizeof(own_sizeof, obj);
    if (total < 0) {
        return NULL;
    }
    total = (total + gc_header + 7) & ~(Py_ssize_t)7;
    Seen seen;
    seen.count = 0;
    int status = 0;
    if (tp == &PyDict_Type) {
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (status == 0 && PyDict_Next(obj, &pos, &key, &value)) {
            status = add_item(key, 1, &seen, &total);
            if (status == 0) {
                status = add_item(value, 1, &seen, &total);
            }
        }
    }
    else if (tp == &PyList_Type || tp == &PyTuple_Type) {
        PyObject **items = tp == &PyList_Type ? ((PyListObject *)obj)->ob_item
                                              : ((PyTupleObject *)obj)->ob_item;
        Py_ssize_t n = Py_SIZE(obj);
        for (Py_ssize_t i = 0; status == 0 && i < n; i++) {
            status = add_item(items[i], 1, &seen, &total);
        }
    }
    else {
        PyObject *iterator = PyObject_GetIter(obj);
        if (iterator == NULL) {
            return NULL;
        }
        PyObject *item;
        /* the iterator holds one more reference to each item it yields */
        while (status == 0 && (item = PyIter_Next(iterator)) != NULL) {
            status = add_item(item, 2, &seen, &total);
            Py_DECREF(item);
        }
        Py_DECREF(iterator);
        if (status == 0 && PyErr_Occurred()) {
            return NULL;
        }
    }
    if (status == -1) {
        return NULL;
    }
    if (status == -2) {
        Py_RETURN_NONE;
    }
    return PyLong_FromSsize_t(total);
}

/* -- the walker's steps: instance_size, add_items, container_size ----------------- */

/* The walker's loop over one item: count it once if something else may reference it,
 * add its size when it is flat, else push it on stack. 0, or -1 on error. */
static int
add_walked_item(PyObject *item, PyObject *seen, PyObject *stack, Py_ssize_t *total)
{
    if (Py_REFCNT(item) > 1) {
        PyObject *ident = PyLong_FromVoidPtr(item);
        if (ident == NULL) {
            return -1;
        }
        int met = PySet_Contains(seen, ident);
        if (met == 0) {
            met = PySet_Add(seen, ident) < 0 ? -1 : 0;
        }
        Py_DECREF(ident);
        if (met != 0) {
            return met < 0 ? -1 : 0;
        }
    }
    Py_ssize_t size = flat_item_size(item);
    if (size == -1) {
        return -1;
    }
    if (size == -2) {
        return PyList_Append(stack, item);
    }
    *total += size;
    return 0;
}

/* gc.get_referents(obj) into a fixed buffer; the visit stops when it is full. */
typedef struct {
    Py_ssize_t count;
    PyObject *items[INSTANCE_REFERENTS];
} Referents;

static int
collect_referent(PyObject *ref, void *arg)
{
    Referents *refs = (Referents *)arg;
    if (refs->count == INSTANCE_REFERENTS) {
        return 1;
    }
    refs->items[refs->count++] = ref;
    return 0;
}

/* Whether the walker leaves ref out of an instance's attributes: isinstance(ref, shared). */
static int
is_shared(PyObject *ref)
{
    PyTypeObject *tp = Py_TYPE(ref);
    for (int i = 0; i < N_FLAT; i++) {
        if (flat_types[i] == tp) {
            return 0;
        }
    }
    return PyObject_IsInstance(ref, shared_types);
}

static PyObject *
instance_size(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (!configured || shared_types == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "boundkit._speedups is not configured");
        return NULL;
    }
    if (nargs != 5 || !PySet_Check(args[1]) || !PyList_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "instance_size(obj, seen, stack, managed, header)");
        return NULL;
    }
    PyObject *obj = args[0], *seen = args[1], *stack = args[2];
    int managed = PyObject_IsTrue(args[3]);
    Py_ssize_t header = PyLong_AsSsize_t(args[4]);
    if (managed < 0 || (header == -1 && PyErr_Occurred())) {
        return NULL;
    }
    Referents refs;
    refs.count = 0;
    traverseproc traverse = Py_TYPE(obj)->tp_traverse;
    if (PyObject_IS_GC(obj) && traverse != NULL && traverse(obj, collect_referent, &refs)) {
        Py_RETURN_NONE;  /* too many referents: the walker decides whether to sample */
    }
    for (Py_ssize_t i = 0; i < refs.count; i++) {
        Py_INCREF(refs.items[i]);
    }
    PyObject *result = NULL;
    Py_ssize_t n = 0;  /* the attributes, kept at the front of refs.items */
    for (Py_ssize_t i = 0; i < refs.count; i++) {
        PyObject *ref = refs.items[i];
        int shared = is_shared(ref);
        if (shared < 0) {
            goto done;
        }
        if (shared) {
            Py_DECREF(ref);
        }
        else {
            refs.items[n++] = ref;
        }
    }
    refs.count = n;
    if (n > sample_above) {
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }
    Py_ssize_t total = 0;
    if (managed && !(n == 1 && Py_IS_TYPE(refs.items[0], &PyDict_Type))) {
        total += 16 + 8 * n;  /* _attribute_storage(n) */
    }
    PyObject *own = PyObject_CallMethodNoArgs(obj, str_sizeof);
    if (own == NULL) {
        goto done;
    }
    Py_ssize_t size = PyLong_AsSsize_t(own);
    Py_DECREF(own);
    if (size == -1 && PyErr_Occurred()) {
        goto done;
    }
    total += (size + header) & ~(Py_ssize_t)7;
    /* each attribute holds the reference taken above too, so every one is looked up in
     * seen, as the Python walker's loop over its referents list does */
    for (Py_ssize_t i = 0; i < n; i++) {
        if (add_walked_item(refs.items[i], seen, stack, &total) < 0) {
            goto done;
        }
    }
    result = PyLong_FromSsize_t(total);
done:
    for (Py_ssize_t i = 0; i < refs.count; i++) {
        Py_DECREF(refs.items[i]);
    }
    return result;
}

/* The walker's loop over the items of a list, tuple or dict (its keys, then its
 * values, as its (keys(), values())): 1 when done, 0 for another type, -1 on error. */
static int
walk_items(PyObject *children, PyObject *seen, PyObject *stack, Py_ssize_t *total)
{
    if (PyList_CheckExact(children) || PyTuple_CheckExact(children)) {
        /* the list is not resized meanwhile: no Python code runs */
        Py_ssize_t n = Py_SIZE(children);
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *item = PyList_CheckExact(children) ? PyList_GET_ITEM(children, i)
                                                         : PyTuple_GET_ITEM(children, i);
            if (add_walked_item(item, seen, stack, total) < 0) {
                return -1;
            }
        }
        return 1;
    }
    if (PyDict_CheckExact(children)) {
        for (int values = 0; values < 2; values++) {
            Py_ssize_t pos = 0;
            PyObject *key, *value;
            while (PyDict_Next(children, &pos, &key, &value)) {
                if (add_walked_item(values ? value : key, seen, stack, total) < 0) {
                    return -1;
                }
            }
        }
        return 1;
    }
    return 0;
}

static int
check_walk_args(Py_ssize_t nargs, Py_ssize_t want, PyObject *const *args, const char *usage)
{
    if (nargs != want || !PySet_Check(args[1]) || !PyList_Check(args[2])) {
        PyErr_Format(PyExc_TypeError, "usage: %s", usage);
        return -1;
    }
    return 0;
}

static PyObject *
add_items(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_walk_args(nargs, 3, args, "add_items(children, seen, stack)") < 0) {
        return NULL;
    }
    Py_ssize_t total = 0;
    int done = walk_items(args[0], args[1], args[2], &total);
    if (done < 0) {
        return NULL;
    }
    if (done == 0) {
        Py_RETURN_NONE;
    }
    return PyLong_FromSsize_t(total);
}

static PyObject *
container_size(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_walk_args(nargs, 4, args, "container_size(obj, seen, stack, header)") < 0) {
        return NULL;
    }
    PyObject *obj = args[0];
    Py_ssize_t header = PyLong_AsSsize_t(args[3]);
    if (header == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *own_sizeof;
    Py_ssize_t count = Py_SIZE(obj);
    if (PyList_CheckExact(obj)) {
        own_sizeof = list_sizeof;
    }
    else if (PyTuple_CheckExact(obj)) {
        own_sizeof = tuple_sizeof;
    }
    else if (PyDict_CheckExact(obj)) {
        own_sizeof = dict_sizeof;
        count = 2 * PyDict_GET_SIZE(obj);
    }
    else {
        Py_RETURN_NONE;
    }
    if (count > sample_above) {
        Py_RETURN_NONE;  /* the walker decides whether to sample */
    }
    Py_ssize_t total = call_sizeof(own_sizeof, obj);
    if (total == -1 && PyErr_Occurred()) {
        return NULL;
    }
    total = (total + header) & ~(Py_ssize_t)7;
    if (walk_items(obj, args[1], args[2], &total) < 0) {
        return NULL;
    }
    return PyLong_FromSsize_t(total);
}

/* -- configure ---------------------------------------------------------------- */

static PyObject *
sizeof_of(PyObject *type)
{
    return PyObject_GetAttrString(type, "__sizeof__");
}

static PyObject *
set_entry_type(PyObject *module, PyObject *entry)
{
    if (!PyType_Check(entry) || !PyType_IsSubtype((PyTypeObject *)entry, &PyFloat_Type)) {
        PyErr_SetString(PyExc_TypeError, "the entry type must be a float subclass");
        return NULL;
    }
    PyObject *descr = PyDict_GetItemString(((PyTypeObject *)entry)->tp_dict, "value");
    if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type) ||
        ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
        PyErr_SetString(PyExc_TypeError, "the entry type must keep `value` in a slot");
        return NULL;
    }
    value_offset = ((PyMemberDescrObject *)descr)->d_member->offset;
    Py_INCREF(entry);
    Py_XSETREF(entry_type, (PyTypeObject *)entry);
    Py_RETURN_NONE;
}

static PyObject *
set_flat_limits(PyObject *module, PyObject *args)
{
    Py_ssize_t header, max_items, max_attributes;
    PyObject *shared;
    if (!PyArg_ParseTuple(args, "nnnO!:set_flat_limits", &header, &max_items, &max_attributes,
                          &PyTuple_Type, &shared)) {
        return NULL;
    }
    if (header < 0 || max_items < 0 || max_items > 128 || max_attributes < 0 ||
        max_attributes >= INSTANCE_REFERENTS) {
        PyErr_SetString(PyExc_ValueError,
                        "gc_header >= 0, 0 <= max_items <= 128 and 0 <= max_attributes < 64");
        return NULL;
    }
    gc_header = header;
    max_flat_items = max_items;
    sample_above = max_attributes;
    Py_INCREF(shared);
    Py_XSETREF(shared_types, shared);
    configured = 1;
    Py_RETURN_NONE;
}

static PyObject *
monotonic(PyObject *module, PyObject *unused)
{
#if defined(__linux__)
    return PyFloat_FromDouble(read_monotonic());
#else
    return PyObject_CallNoArgs(monotonic_func);
#endif
}

static PyMethodDef module_methods[] = {
    {"set_entry_type", (PyCFunction)set_entry_type, METH_O,
     "set_entry_type(entry_type, /)\n--\n\n"
     "Name the float subclass, with a `value` slot, that holds a cache's entries."},
    {"set_flat_limits", (PyCFunction)set_flat_limits, METH_VARARGS,
     "set_flat_limits(gc_header, max_items, max_attributes, shared_types, /)\n--\n\n"
     "What sys.getsizeof adds for a GC-tracked object, the most items a flat\n"
     "container may have, the most attributes instance_size() sizes and the types\n"
     "it leaves out of them."},
    {"add_items", (PyCFunction)(void (*)(void))add_items, METH_FASTCALL,
     "add_items(children, seen, stack, /)\n--\n\n"
     "The walker's loop over the items of a list, tuple or dict (keys, then values):\n"
     "the size of the flat ones, counted once; the others are pushed on stack.\n"
     "None for another type."},
    {"container_size", (PyCFunction)(void (*)(void))container_size, METH_FASTCALL,
     "container_size(obj, seen, stack, header, /)\n--\n\n"
     "One step of the walker on a list, tuple or dict of at most max_attributes\n"
     "items (a dict's keys and values both count): its size and that of its flat\n"
     "items; the others are pushed on stack. None otherwise."},
    {"instance_size", (PyCFunction)(void (*)(void))instance_size, METH_FASTCALL,
     "instance_size(obj, seen, stack, managed, header, /)\n--\n\n"
     "One step of the walker in boundkit/_sizes.py on an instance: its size, its\n"
     "attribute storage and its flat attributes; the others are pushed on stack.\n"
     "None when it has too many attributes."},
    {"flat_size", (PyCFunction)flat_size, METH_O,
     "flat_size(obj, /)\n--\n\n"
     "The size of a flat value or of a small container of flat values, else None."},
    {"monotonic", (PyCFunction)monotonic, METH_NOARGS,
     "monotonic()\n--\n\nThe clock the hit path reads for time.monotonic."},
    {NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "boundkit._speedups",
    .m_doc = "The optional C accelerator of boundkit.cache and boundkit._sizes.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&LookupsType) < 0) {
        return NULL;
    }
    PyTypeObject *types[N_FLAT] = {&PyUnicode_Type, &PyBytes_Type, &PyByteArray_Type,
                                   &PyLong_Type,    &PyFloat_Type, &PyComplex_Type,
                                   &PyBool_Type,    Py_TYPE(Py_None)};
    for (int i = 0; i < N_FLAT; i++) {
        flat_types[i] = types[i];
        if (flat_sizeof[i] == NULL &&
            (flat_sizeof[i] = sizeof_of((PyObject *)types[i])) == NULL) {
            return NULL;
        }
    }
    if ((dict_sizeof = sizeof_of((PyObject *)&PyDict_Type)) == NULL ||
        (list_sizeof = sizeof_of((PyObject *)&PyList_Type)) == NULL ||
        (tuple_sizeof = sizeof_of((PyObject *)&PyTuple_Type)) == NULL ||
        (set_sizeof = sizeof_of((PyObject *)&PySet_Type)) == NULL ||
        (frozenset_sizeof = sizeof_of((PyObject *)&PyFrozenSet_Type)) == NULL) {
        return NULL;
    }
    if ((str_missing = PyUnicode_InternFromString("__missing__")) == NULL ||
        (str_locked_getitem = PyUnicode_InternFromString("_locked_getitem")) == NULL ||
        (str_lookup = PyUnicode_InternFromString("_lookup")) == NULL ||
        (str_sizeof = PyUnicode_InternFromString("__sizeof__")) == NULL) {
        return NULL;
    }
    PyObject *time_module = PyImport_ImportModule("time");
    if (time_module == NULL) {
        return NULL;
    }
    monotonic_func = PyObject_GetAttrString(time_module, "monotonic");
    Py_DECREF(time_module);
    if (monotonic_func == NULL) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&speedups_module);
    if (module == NULL) {
        return NULL;
    }
    Py_INCREF(&LookupsType);
    if (PyModule_AddObject(module, "CacheLookups", (PyObject *)&LookupsType) < 0) {
        Py_DECREF(&LookupsType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
