"""The bridge's direct RecordDict encoding is byte for byte Flower's serde."""

import unittest

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.common.serde import recorddict_to_proto

from floret_bridge.wire import encode_record_dict


class DirectEncoding(unittest.TestCase):
    def test_bytes_equal_flowers_serde(self):
        rd = RecordDict(
            {
                "arrays": ArrayRecord(
                    {
                        "w": Array(np.arange(12, dtype=np.float32).reshape(3, 4)),
                        "empty": Array(np.zeros((0,), dtype=np.int64)),
                        "scalar": Array(np.array(3.5)),
                        "raw": Array(dtype="float32", shape=(1,), stype="raw", data=b"\0\0\0\0"),
                    }
                ),
                "metrics": MetricRecord({"loss": 0.5, "n": 3, "hist": [1.0, 2.0]}),
                "config": ConfigRecord({"name": "x", "ok": True, "blob": b"\x01"}),
                "none": ArrayRecord(),
            }
        )
        self.assertEqual(encode_record_dict(rd), recorddict_to_proto(rd).SerializeToString())

    def test_an_empty_record_dict_is_empty_bytes(self):
        self.assertEqual(encode_record_dict(RecordDict()), b"")


if __name__ == "__main__":
    unittest.main()
