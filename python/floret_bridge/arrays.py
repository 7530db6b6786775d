"""Arrays at the boundary: Floret's `raw` layout <-> Flower's `numpy.ndarray` (.npy bytes).

Floret's Rust apps write arrays as stype "raw": the numpy dtype name, the shape and the
elements' bytes, little-endian, in row-major order. Flower's are stype "numpy.ndarray":
the bytes of `np.save`. A Python app must be able to call `.numpy()` on whatever arrives,
so `raw` arrays become Flower's on the way in; arrays leaving in Flower's form are carried
through unchanged by Floret (it never computes on them). `to_raw` is the other direction,
for a Rust peer that needs raw bytes. Every dtype `np.save(allow_pickle=False)` takes
(bool, ints, uints, floats, complex, fixed-width bytes and unicode, datetime64,
timedelta64) converts both ways.
"""

import io

import numpy as np

RAW = "raw"
NUMPY = "numpy.ndarray"


def raw_to_ndarray(dtype, shape, data):
    """The ndarray that a raw array's (dtype, shape, data) describe."""
    dt = np.dtype(dtype).newbyteorder("<")
    arr = np.frombuffer(bytes(data), dtype=dt)
    return arr.reshape(tuple(int(d) for d in shape))


def ndarray_to_raw(ndarray):
    """(dtype name, shape, little-endian row-major bytes) of an ndarray."""
    if ndarray.dtype.hasobject:
        raise TypeError("object arrays have no raw form (Flower refuses them too)")
    le = ndarray.dtype.newbyteorder("<")
    data = np.ascontiguousarray(ndarray.astype(le, copy=False)).tobytes()
    return str(le), tuple(ndarray.shape), data


def npy_bytes(ndarray):
    """The .npy bytes Flower's `Array.from_numpy_ndarray` stores."""
    buf = io.BytesIO()
    np.save(buf, ndarray, allow_pickle=False)
    return buf.getvalue()


def to_flower(record_dict):
    """Turns every raw array of a Flower RecordDict into Flower's form, in place."""
    from flwr.app import Array, ArrayRecord

    for key, record in list(record_dict.items()):
        if not isinstance(record, ArrayRecord):
            continue
        if not any(a.stype == RAW for a in record.values()):
            continue
        for name, array in list(record.items()):
            if array.stype == RAW:
                nd = raw_to_ndarray(array.dtype, array.shape, array.data)
                record[name] = Array(nd)
    return record_dict


def to_raw(record_dict):
    """Turns every Flower-form array of a RecordDict into the raw layout, in place."""
    from flwr.app import Array, ArrayRecord

    for record in record_dict.values():
        if not isinstance(record, ArrayRecord):
            continue
        for name, array in list(record.items()):
            if array.stype == NUMPY:
                dtype, shape, data = ndarray_to_raw(array.numpy())
                record[name] = Array(dtype=dtype, shape=shape, stype=RAW, data=data)
    return record_dict


def with_dtypes(record_dict):
    """`record_dict`, or a copy whose arrays all name their dtype.

    Flower's legacy API (`Parameters`, `NumPyClient`) makes arrays with an empty dtype and
    shape; Floret's wire requires a dtype. For `.npy` data they are read from its header,
    otherwise the dtype becomes "unknown" (carried, never computed on). The data itself is
    never touched, so Flower's legacy conversions read it back as they wrote it.
    """
    from flwr.app import Array, ArrayRecord, RecordDict

    if not any(
        isinstance(r, ArrayRecord) and any(a.dtype == "" for a in r.values())
        for r in record_dict.values()
    ):
        return record_dict
    fixed = RecordDict()
    for key, record in record_dict.items():
        if isinstance(record, ArrayRecord) and any(a.dtype == "" for a in record.values()):
            copy = ArrayRecord()
            for name, a in record.items():
                if a.dtype == "":
                    dtype, shape = _npy_header(a.data) if a.stype == NUMPY else ("unknown", ())
                    a = Array(dtype=dtype, shape=shape, stype=a.stype, data=a.data)
                copy[name] = a
            record = copy
        fixed[key] = record
    return fixed


def _npy_header(data):
    """(dtype name, shape) from .npy bytes; ("unknown", ()) when they are not .npy."""
    try:
        buf = io.BytesIO(data)
        version = np.lib.format.read_magic(buf)
        shape, _, dtype = np.lib.format._read_array_header(buf, version)
        return str(dtype), tuple(shape)
    except Exception:  # not .npy: carried as opaque bytes
        return "unknown", ()
