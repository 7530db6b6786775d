"""ClientApp workers forked from the ServerApp's process (`server.fork_workers`)."""

import os
import socket
import tempfile
import threading
import unittest

from floret_bridge import frames, server

APP_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "flower-numpy")


class Sink:
    def close(self):
        pass


def request(path, count, component="numpyapp.client_app:app"):
    return frames.pack_parts([path.encode(), str(count).encode(), component.encode()])


class ForkedWorkers(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.path = os.path.join(self.dir, "s.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(8)

    def tearDown(self):
        self.listener.close()
        os.unlink(self.path)
        os.rmdir(self.dir)

    def test_forked_workers_connect_load_the_client_app_and_end_when_their_socket_closes(self):
        forked = server.fork_workers(Sink(), os.path.abspath(APP_DIR), request(self.path, 2))
        self.assertEqual(forked, 2)
        for _ in range(forked):
            conn, _ = self.listener.accept()
            with conn, conn.makefile("rb") as f:
                tag, _ = frames.Channel(f, None).read()
                self.assertEqual(tag, "R", "the worker loaded the ClientApp")
        # Both sockets are closed: each worker sees the end of its input and exits 0.
        for _ in range(forked):
            _, status = os.wait()
            self.assertEqual(os.waitstatus_to_exitcode(status), 0)

    def test_a_component_that_does_not_load_is_said_in_one_line(self):
        forked = server.fork_workers(
            Sink(), os.path.abspath(APP_DIR), request(self.path, 1, "numpyapp.nope:app")
        )
        self.assertEqual(forked, 1)
        conn, _ = self.listener.accept()
        with conn, conn.makefile("rb") as f:
            tag, body = frames.Channel(f, None).read()
        self.assertEqual(tag, "F")
        self.assertIn("no module 'numpyapp.nope'", body.decode())
        os.wait()

    def test_forked_workers_draw_random_numbers_of_their_own(self):
        import numpy as np

        from floret_bridge import worker

        def draw_in_a_fork():
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                try:
                    worker._reseed_after_fork()
                    os.write(w, repr(np.random.random()).encode())
                finally:
                    os._exit(0)
            os.close(w)
            with os.fdopen(r) as f:
                value = float(f.read())
            os.waitpid(pid, 0)
            return value

        # From the same parent state, as two workers forked one after the other are:
        # without a reseed both would draw the same number.
        np.random.seed(1234)
        first = draw_in_a_fork()
        np.random.seed(1234)
        self.assertNotEqual(first, draw_in_a_fork())

    def test_no_fork_while_another_thread_runs(self):
        stop = threading.Event()
        t = threading.Thread(target=stop.wait)
        t.start()
        try:
            self.assertEqual(server.fork_workers(Sink(), APP_DIR, request(self.path, 2)), 0)
        finally:
            stop.set()
            t.join()


if __name__ == "__main__":
    unittest.main()
