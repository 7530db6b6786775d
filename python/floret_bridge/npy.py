"""Faster `.npy` reading and writing for Flower's `Array`, with the same results.

Flower's `Array.numpy()` and `Array.from_numpy_ndarray()` go through `np.load` and
`np.save`, which parse and format the `.npy` header (a Python dict literal) for every
array: for a model of ten arrays that is a sixth of a ClientApp call and half of what a
ServerApp spends per reply, and the headers are the same every round. Here a header is
parsed or formatted once and remembered; the data is copied exactly as numpy does, so
`numpy()` still returns a fresh, writable array and `from_numpy_ndarray()` the same bytes
`np.save` writes (`python/tests/test_npy.py`). Anything but a plain version 1.0 header
and a plain dtype (structured and object dtypes, Fortran order on save) takes numpy's own
path.
"""

import io

import numpy as np
from numpy.lib import format as npy_format

_MAGIC = b"\x93NUMPY\x01\x00"
_read_cache = {}
_write_cache = {}
_CACHE_MAX = 4096


def load(data):
    """The ndarray in `.npy` bytes, as `np.load(BytesIO(data), allow_pickle=False)`."""
    if not data.startswith(_MAGIC) or len(data) < 10:
        return np.load(io.BytesIO(data), allow_pickle=False)
    header_len = int.from_bytes(data[8:10], "little")
    end = 10 + header_len
    header = data[10:end]
    parsed = _read_cache.get(header)
    if parsed is None:
        parsed = npy_format.read_array_header_1_0(io.BytesIO(data[8:end]))
        shape, fortran, dtype = parsed
        if dtype.hasobject or dtype.fields is not None or dtype.itemsize == 0:
            return np.load(io.BytesIO(data), allow_pickle=False)
        if len(_read_cache) < _CACHE_MAX:
            _read_cache[header] = parsed
    shape, fortran, dtype = parsed
    count = 1
    for d in shape:
        count *= d
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=end).copy()
    if fortran:
        return flat.reshape(shape[::-1]).transpose()
    return flat.reshape(shape)


def save(ndarray):
    """The bytes `np.save(buf, ndarray, allow_pickle=False)` writes."""
    dtype = ndarray.dtype
    if (
        dtype.hasobject
        or dtype.fields is not None
        or dtype.itemsize == 0
        or not ndarray.flags.c_contiguous
    ):
        buf = io.BytesIO()
        np.save(buf, ndarray, allow_pickle=False)
        return buf.getvalue()
    key = (dtype.str, dtype.descr.__repr__() if dtype.subdtype else "", ndarray.shape)
    prefix = _write_cache.get(key)
    if prefix is None:
        buf = io.BytesIO()
        np.save(buf, ndarray, allow_pickle=False)
        whole = buf.getvalue()
        if len(_write_cache) < _CACHE_MAX:
            _write_cache[key] = whole[: len(whole) - ndarray.nbytes]
        return whole
    return prefix + ndarray.tobytes()


_names = {}


def dtype_name(dtype):
    """`str(dtype)`, remembered for plain dtypes (numpy builds it in Python each time)."""
    name = _names.get(dtype)
    if name is None:
        name = str(dtype)
        if dtype.fields is None and dtype.metadata is None and len(_names) < _CACHE_MAX:
            _names[dtype] = name
    return name


def install():
    """Makes Flower's `Array` use `load` and `save`."""
    from flwr.app import Array
    from flwr.common.constant import SType

    from .wire import new_array

    def numpy(self):
        if self.stype != SType.NUMPY:
            raise TypeError(
                f"Unsupported serialization type for numpy conversion: '{self.stype}'"
            )
        return load(self.data)

    def from_numpy_ndarray(cls, ndarray):
        assert isinstance(ndarray, np.ndarray), f"Expected NumPy ndarray, got {type(ndarray)}"
        # What Array(dtype=..., shape=..., stype=..., data=...) makes of these, without
        # its argument checks (they hold by construction).
        return new_array(dtype_name(ndarray.dtype), tuple(ndarray.shape), SType.NUMPY,
                         save(ndarray))

    Array.numpy = numpy
    Array.from_numpy_ndarray = classmethod(from_numpy_ndarray)
