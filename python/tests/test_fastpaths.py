"""Flower's record containers behave the same with the bridge's item methods."""

import unittest

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.app.message.typeddict import TypedDict

from floret_bridge import fastpaths


def behaviour(make):
    """What a sequence of operations on a fresh container gives: values or errors."""
    out = []
    rd = make()

    def attempt(f):
        try:
            out.append(("ok", f()))
        except Exception as e:  # the error is part of the behaviour
            out.append((type(e).__name__, str(e)))

    attempt(lambda: rd.__setitem__("m", MetricRecord({"a": 1.0})))
    attempt(lambda: rd.__setitem__("c", ConfigRecord({"s": "x"})))
    attempt(lambda: rd.__setitem__("w", ArrayRecord([np.arange(3.0)])))
    attempt(lambda: rd.__setitem__(3, MetricRecord()))
    attempt(lambda: rd.__setitem__("bad", {"a": 1}))
    attempt(lambda: rd["missing"])
    attempt(lambda: (len(rd), list(rd), "m" in rd, 3 in rd))
    attempt(lambda: (list(rd.keys()), [type(v).__name__ for v in rd.values()]))
    attempt(lambda: sorted(rd.array_records) + sorted(rd.metric_records))
    attempt(lambda: rd["w"]["0"].numpy().tolist())
    attempt(lambda: rd["w"].__setitem__("1", "not an array"))
    attempt(lambda: rd["w"].__setitem__(1, Array(np.zeros(1))))
    attempt(lambda: rd["m"].__setitem__("b", "not a metric"))
    attempt(lambda: rd["c"].__setitem__("t", [1, 2]))
    attempt(lambda: rd.array_records.__setitem__("w2", ArrayRecord()))
    attempt(lambda: sorted(rd))
    attempt(lambda: rd.__delitem__("w2"))
    attempt(lambda: rd.__delitem__("nope"))
    attempt(lambda: [(k, type(v).__name__) for k, v in rd.items()])
    attempt(lambda: rd["w"].is_dirty)
    attempt(lambda: dict(rd["m"]))
    attempt(lambda: repr(rd))
    for view in ("array_records", "metric_records", "config_records"):
        v = getattr(rd, view)
        attempt(lambda: (type(v).__name__, sorted(vars(v)), v.__orig_class__, dict(v)))
        attempt(lambda: v.__setitem__("x", MetricRecord({"z": 1})))
        attempt(lambda: sorted(rd))
        attempt(lambda: v.__delitem__("x"))
        attempt(lambda: sorted(rd))
    return out


class SameBehaviour(unittest.TestCase):
    def test_records_behave_the_same_with_the_fast_methods(self):
        names = ("__setitem__", "__delitem__", "__getitem__", "__iter__", "__len__",
                 "__contains__", "keys", "values", "items")
        views = ("array_records", "metric_records", "config_records")
        # Flower's own, even if another test installed the fast ones first.
        originals = {n: fastpaths.ORIGINALS.get(n, TypedDict.__dict__[n]) for n in names}
        original_views = {n: fastpaths.ORIGINALS.get(n, RecordDict.__dict__[n]) for n in views}
        try:
            for name, method in originals.items():
                setattr(TypedDict, name, method)
            for name, prop in original_views.items():
                setattr(RecordDict, name, prop)
            want = behaviour(RecordDict)
            self.assertTrue(fastpaths.install(), "Flower 1.42's TypedDict is patched")
            self.assertIsNot(TypedDict.__dict__["__setitem__"], originals["__setitem__"])
            self.assertIsNot(RecordDict.__dict__["metric_records"], original_views["metric_records"])
            got = behaviour(RecordDict)
        finally:
            fastpaths.install()  # leave the process as the bridge runs it
        self.assertEqual(got, want)
        self.assertIn(("TypeError", "Expected `str`, but received `int` for the key."), got)

    def test_a_record_dict_subclass_keeps_flowers_views(self):
        fastpaths.install()
        seen = []

        class Tracked(RecordDict):
            def __setitem__(self, key, value):
                seen.append(key)
                super().__setitem__(key, value)

        rd = Tracked({"m": MetricRecord({"a": 1.0})})
        seen.clear()
        self.assertEqual(list(rd.metric_records), ["m"])
        self.assertEqual(seen, ["m"], "Flower's view writes each record back")


if __name__ == "__main__":
    unittest.main()
