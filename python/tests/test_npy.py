"""The bridge's `.npy` fast path gives numpy's own results."""

import io
import unittest

import numpy as np

from floret_bridge import npy

from test_arrays import DTYPES, sample


def numpy_save(a):
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


class SameAsNumpy(unittest.TestCase):
    def cases(self):
        for dtype in DTYPES:
            yield dtype, sample(dtype)
        yield "fortran", np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))
        yield "strided", np.arange(10, dtype=np.int16)[::2]
        yield "scalar", np.array(2.5)
        yield "empty", np.zeros((0, 3), dtype=np.float64)
        yield "big-endian", np.arange(4, dtype=">i4")
        yield "structured", np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8")])
        yield "subarray", np.zeros(2, dtype=("<f4", (3,)))

    def test_save_writes_np_saves_bytes(self):
        for name, a in self.cases():
            for _ in range(2):  # the second time from the cache
                with self.subTest(case=name):
                    self.assertEqual(npy.save(a), numpy_save(a))

    def test_load_reads_what_np_load_reads_fresh_and_writable(self):
        for name, a in self.cases():
            data = numpy_save(a)
            for _ in range(2):
                with self.subTest(case=name):
                    got = npy.load(data)
                    want = np.load(io.BytesIO(data), allow_pickle=False)
                    self.assertEqual(got.dtype, want.dtype)
                    self.assertEqual(got.shape, want.shape)
                    np.testing.assert_array_equal(got, want)
                    self.assertTrue(got.flags.writeable)
                    self.assertEqual(got.flags.f_contiguous, want.flags.f_contiguous)

    def test_flowers_array_uses_it_once_installed(self):
        from flwr.app import Array

        npy.install()
        a = np.arange(12, dtype=np.float32).reshape(3, 4)
        arr = Array(a)
        self.assertEqual(arr.data, numpy_save(a))
        back = arr.numpy()
        np.testing.assert_array_equal(back, a)
        back += 1  # a fresh, writable copy, as np.load gives
        np.testing.assert_array_equal(arr.numpy(), a)


if __name__ == "__main__":
    unittest.main()
