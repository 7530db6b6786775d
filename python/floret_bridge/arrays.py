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
