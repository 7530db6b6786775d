"""Frames written from segments arrive whole, whatever the pipe takes per write."""

import os
import threading
import unittest

from floret_bridge import frames


class SegmentedFrames(unittest.TestCase):
    def roundtrip(self, parts):
        r, w = os.pipe()
        got = {}

        def read():
            with os.fdopen(r, "rb") as f:
                got["frame"] = frames.Channel(f, None).read()

        reader = threading.Thread(target=read)
        reader.start()
        with os.fdopen(w, "wb") as f:
            frames.Channel(None, f).write_segmented_parts("C", parts)
        reader.join()
        return got["frame"]

    def test_parts_larger_than_the_pipe_arrive_whole_and_in_order(self):
        # 3 MB in 1,500 segments: more than a pipe holds and more than one writev takes.
        big = [bytes([i % 251]) * 2000 for i in range(1500)]
        parts = [[b"c"], big, [b""], [b"tail", b"", b"!"]]
        tag, body = self.roundtrip(parts)
        self.assertEqual(tag, "C")
        self.assertEqual(
            [bytes(p) for p in frames.unpack_parts(body)],
            [b"c", b"".join(big), b"", b"tail!"],
        )

    def test_the_same_bytes_as_write_parts(self):
        parts = [[b"ab", b"c"], [b"d"]]
        r, w = os.pipe()
        with os.fdopen(w, "wb") as f:
            frames.Channel(None, f).write_parts("C", [b"abc", b"d"])
        with os.fdopen(r, "rb") as f:
            want = f.read()
        tag, body = self.roundtrip(parts)
        self.assertEqual(want[5:], body)


if __name__ == "__main__":
    unittest.main()
