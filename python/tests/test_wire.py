"""The bridge's direct RecordDict encoding is byte for byte Flower's serde, and its
decoding gives what Flower's does, attribute for attribute."""

import io
import types
import unittest

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.common.serde import (
    context_from_proto,
    context_to_proto,
    message_from_proto,
    message_to_proto,
    recorddict_to_proto,
)
from flwr.proto.message_pb2 import Context as ProtoContext
from flwr.proto.message_pb2 import Message as ProtoMessage
from flwr.supercore.task_identity import TaskIdentity

from floret_bridge import npy
from floret_bridge.wire import (
    decode_context,
    decode_message,
    encode_record_dict,
    encode_record_dict_segments,
    new_array,
)

from test_arrays import DTYPES, sample


def numpy_save(a):
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def flower_array(nd):
    """An Array as Flower's own `from_numpy_ndarray` makes it (whatever is installed)."""
    return Array(dtype=str(nd.dtype), shape=tuple(nd.shape), stype="numpy.ndarray",
                 data=numpy_save(nd))


def structure(obj):
    """What user code can see of an object: its type and, recursively, its attributes in
    order; functions (a TypedDict's checks) by identity."""
    if isinstance(obj, (bytes, str, int, float, bool, type(None))):
        return (type(obj), obj)
    if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType)):
        return ("function", id(obj))
    if isinstance(obj, (list, tuple)):
        return (type(obj), [structure(x) for x in obj])
    if isinstance(obj, dict):
        return (type(obj), [(k, structure(v)) for k, v in obj.items()])
    return (type(obj), [(k, structure(v)) for k, v in vars(obj).items()])


def a_model():
    record = ArrayRecord({dtype: flower_array(sample(dtype)) for dtype in DTYPES})
    record["raw"] = Array(dtype="float32", shape=(2,), stype="raw", data=b"\0" * 8)
    record["empty"] = flower_array(np.zeros((0, 3), dtype=np.float32))
    record["scalar"] = flower_array(np.array(2.5))
    # Flower's legacy Parameters: no dtype nor shape.
    record["legacy"] = Array(dtype="", shape=(), stype="numpy.ndarray", data=numpy_save(np.ones(3)))
    return record


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

    def test_every_dtype_and_repeated_shapes_encode_as_flower_does(self):
        for _ in range(2):  # the second time with the remembered array prefixes
            rd = RecordDict({"arrays": a_model(), "more": a_model(), "m": MetricRecord({"n": 1})})
            want = recorddict_to_proto(rd).SerializeToString()
            self.assertEqual(encode_record_dict(rd), want)
            self.assertEqual(b"".join(encode_record_dict_segments(rd)), want)
        # The same key and shape with other data, and a big array (multi-byte lengths).
        rd = RecordDict({"arrays": ArrayRecord({"w": flower_array(np.arange(40000.0))})})
        self.assertEqual(encode_record_dict(rd), recorddict_to_proto(rd).SerializeToString())


class DecodingAsFlowerDoes(unittest.TestCase):
    def setUp(self):
        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 7, 1

    def messages(self):
        content = RecordDict(
            {
                "arrays": a_model(),
                "metrics": MetricRecord({"loss": 0.5, "n": 3, "hist": [1.0, 2.0]}),
                "config": ConfigRecord({"name": "x", "ok": True, "blob": b"\x01", "r": 3}),
                "none": ArrayRecord(),
            }
        )
        train = Message(content, 5, "train", group_id="3", ttl=100.0)
        train.metadata.__dict__["_message_id"] = "m1"
        yield "instruction", train
        yield "reply", Message(RecordDict({"arrays": a_model()}), reply_to=train)
        yield "error", Message(Error(2, "ValueError: boom"), reply_to=train)
        yield "error without reason", Message(Error(3), reply_to=train)
        yield "empty content", Message(RecordDict(), 6, "query.custom")

    def test_messages_equal_flowers_decode(self):
        for name, message in self.messages():
            with self.subTest(message=name):
                wire = message_to_proto(message).SerializeToString()
                want = message_from_proto(ProtoMessage.FromString(wire))
                got = decode_message(wire)
                self.assertEqual(structure(got), structure(want))
                got_mv = decode_message(memoryview(wire))
                self.assertEqual(structure(got_mv), structure(want))

    def test_decoded_arrays_behave_as_flowers(self):
        wire = message_to_proto(next(self.messages())[1]).SerializeToString()
        want = message_from_proto(ProtoMessage.FromString(wire)).content["arrays"]
        got = decode_message(wire).content["arrays"]
        for key in want:
            with self.subTest(array=key):
                self.assertEqual(got[key], want[key])
                self.assertEqual(got[key].object_id, want[key].object_id)
                self.assertFalse(got[key].is_dirty)
                if want[key].stype == "numpy.ndarray":
                    np.testing.assert_array_equal(got[key].numpy(), want[key].numpy())
        got["float32"].data = b"changed"  # a set attribute is tracked as in Flower's
        self.assertTrue(got["float32"].is_dirty)

    def test_contexts_equal_flowers_decode(self):
        state = RecordDict({"model": a_model(), "seen": MetricRecord({"calls": 2})})
        context = Context(
            run_id=7, node_id=5, node_config={"partition-id": 3, "name": "n"},
            state=state, run_config={"lr": 0.1, "rounds": 3, "ok": True, "s": "x"},
        )
        wire = context_to_proto(context).SerializeToString()
        want = context_from_proto(ProtoContext.FromString(wire))
        self.assertEqual(structure(decode_context(wire)), structure(want))
        empty = Context(run_id=1, node_id=2, node_config={}, state=RecordDict(), run_config={})
        wire = context_to_proto(empty).SerializeToString()
        want = context_from_proto(ProtoContext.FromString(wire))
        self.assertEqual(structure(decode_context(wire)), structure(want))

    def test_a_context_seen_again_is_decoded_the_same_and_shares_nothing(self):
        context = Context(
            run_id=7, node_id=5, node_config={"partition-id": 3},
            state=RecordDict(), run_config={"lr": 0.1, "name": "x"},
        )
        wire = context_to_proto(context).SerializeToString()
        want = context_from_proto(ProtoContext.FromString(wire))
        first = decode_context(wire)
        first.run_config["lr"] = 99.0  # what an app may do to its own context
        first.node_config["extra"] = 1
        first.state["m"] = MetricRecord({"n": 1})
        second = decode_context(wire)
        self.assertEqual(structure(second), structure(want))
        self.assertIsNot(second.run_config, first.run_config)

    def test_new_array_is_what_arrays_constructor_makes(self):
        for dtype in DTYPES:
            nd = sample(dtype)
            args = (str(nd.dtype), tuple(nd.shape), "numpy.ndarray", numpy_save(nd))
            with self.subTest(dtype=dtype):
                want = Array(dtype=args[0], shape=args[1], stype=args[2], data=args[3])
                self.assertEqual(structure(new_array(*args)), structure(want))

    def test_installed_from_numpy_ndarray_makes_flowers_array(self):
        npy.install()
        for dtype in DTYPES:
            nd = sample(dtype)
            with self.subTest(dtype=dtype):
                self.assertEqual(structure(Array(nd)), structure(flower_array(nd)))
                self.assertEqual(
                    structure(Array.from_numpy_ndarray(nd)), structure(flower_array(nd))
                )


if __name__ == "__main__":
    unittest.main()
