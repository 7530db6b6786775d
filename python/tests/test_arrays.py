"""Raw <-> Flower array conversion, for every dtype Flower's Array takes.

Run with the Python that has flwr: `PYTHONPATH=python python -m unittest discover -s python/tests`
(cli/tests/python_apps.rs does).
"""

import unittest

import numpy as np
from flwr.app import Array, ArrayRecord, RecordDict

from floret_bridge import arrays

DTYPES = [
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128", "S5", "U5",
    "datetime64[s]", "timedelta64[ms]",
]


def sample(dtype):
    dt = np.dtype(dtype)
    base = np.arange(6).reshape(2, 3)
    if dt.kind == "S":
        return np.array([[b"a", b"bb", b"ccc"], [b"dddd", b"eeeee", b""]], dtype=dt)
    if dt.kind == "U":
        return np.array([["a", "bb", "ccc"], ["dddd", "\u00e9\u00e9", ""]], dtype=dt)
    if dt.kind == "b":
        return base % 2 == 0
    if dt.kind == "c":
        return (base + 1j * base).astype(dt)
    return base.astype(dt)


class RawRoundTrip(unittest.TestCase):
    def test_every_dtype_survives_raw_and_back(self):
        for dtype in DTYPES:
            with self.subTest(dtype=dtype):
                nd = sample(dtype)
                name, shape, data = arrays.ndarray_to_raw(nd)
                back = arrays.raw_to_ndarray(name, shape, data)
                np.testing.assert_array_equal(back, nd)
                self.assertEqual(back.dtype, nd.dtype)

    def test_raw_bytes_are_little_endian_whatever_the_input_order(self):
        big = np.array([1.5, -2.0], dtype=">f4")
        name, _, data = arrays.ndarray_to_raw(big)
        self.assertEqual(name, "float32")
        self.assertEqual(data, np.array([1.5, -2.0], dtype="<f4").tobytes())

    def test_a_record_dict_converts_both_ways_in_place(self):
        for dtype in DTYPES:
            with self.subTest(dtype=dtype):
                nd = sample(dtype)
                rd = RecordDict({"arrays": ArrayRecord({"w": Array(nd)})})
                arrays.to_raw(rd)
                self.assertEqual(rd["arrays"]["w"].stype, arrays.RAW)
                arrays.to_flower(rd)
                self.assertEqual(rd["arrays"]["w"].stype, arrays.NUMPY)
                np.testing.assert_array_equal(rd["arrays"]["w"].numpy(), nd)

    def test_a_rust_apps_float32_array_reads_as_numpy(self):
        # What a Floret Rust app sends: dtype name, shape, little-endian bytes.
        raw = Array(dtype="float32", shape=(2, 2), stype="raw",
                    data=np.array([1, 2, 3, 4], dtype="<f4").tobytes())
        rd = arrays.to_flower(RecordDict({"a": ArrayRecord({"x": raw})}))
        np.testing.assert_array_equal(rd["a"]["x"].numpy(), [[1, 2], [3, 4]])


if __name__ == "__main__":
    unittest.main()
