"""The user's ServerApp on a Grid that is Floret's.

The process loads the ServerApp, says 'R' (ready) and waits for the run's Context ('S').
Then it calls `app(grid, context)`; every Grid call is one request frame to the `flwr`
process and one answer:

| request | parts | answer |
|---|---|---|
| 'N' node ids | - | 'N': u64 little-endian ids |
| 'P' push | contents, then per message: Metadata, content index | 'I': message ids |
| 'W' send and receive | timeout (text, "" = none), then as 'P' | 'l' replies... then 'L' |
| 'L' pull | message ids | 'L': reply Messages |

A failed request is answered 'E' with the reason, raised here as RuntimeError. Messages
that share one RecordDict (a strategy sends the same model to every node) cross the pipe
once. 'V' (no answer) reports round progress for `flwr run`'s table and history files;
'D' ends the run, 'X' fails it with the exception's text.
"""

import gc
import json
import struct
import sys
import threading
import time
import traceback

from . import arrays, fastpaths, frames, npy, wire
from .components import ComponentError, load

_U64 = struct.Struct("<Q")


class Rounds:
    """Turns what a strategy does into Floret's round events (RoundStarted/Finished).

    Flower's message strategies report a round through `Strategy.start`'s calls:
    configure_train (the round begins), aggregate_train/aggregate_evaluate (its metrics)
    and evaluate_fn (the server-side metrics). The Grid adds each phase's counts. A
    ServerApp without a message strategy still gets rounds: each train phase opens one.
    """

    def __init__(self, channel, lock):
        self._channel = channel
        self._lock = lock
        self.num_rounds = 0
        self.round = 0
        self._open = None

    def begin(self, server_round):
        self._close()
        self.round = server_round
        self._open = {"round": server_round, "train": None, "evaluate": None, "central": None}
        self._emit({"RoundStarted": {"round": server_round, "num_rounds": self.num_rounds}})

    def phase(self, kind, sampled, replies, failures, group_id=""):
        """Counts one send-and-receive. Flower's legacy ServerApp sends one message per
        call, naming the round in `group_id`: those calls add up to one phase."""
        if kind not in ("train", "evaluate"):
            return
        if group_id.isdigit():
            if self._open is None or self._open["round"] != int(group_id):
                self.begin(int(group_id))
        elif kind == "train" and (self._open is None or self._open["train"] is not None):
            self.begin(self.round + 1)
        if self._open is None:
            return
        counts = self._open[kind] or {
            "sampled": 0, "replies": 0, "failures": 0, "late": 0, "metrics": {},
        }
        counts["sampled"] += sampled
        counts["replies"] += replies
        counts["failures"] += failures
        self._open[kind] = counts

    def metrics(self, kind, server_round, record):
        if record is None or self._open is None or self._open["round"] != server_round:
            return
        if kind == "central":
            self._open["central"] = _metric_json(record)
        elif self._open.get(kind) is not None:
            self._open[kind]["metrics"] = _metric_json(record)

    def end(self):
        self._close()

    def _close(self):
        if self._open is not None:
            self._emit({"RoundFinished": self._open})
            self._open = None

    def _emit(self, event):
        with self._lock:
            self._channel.write("V", json.dumps(event).encode())


def _metric_json(record):
    out = {}
    for key, value in record.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, float):
            out[key] = {"F64": value}
        elif isinstance(value, int):
            out[key] = {"I64": value} if value >= -(2**63) and value < 2**63 else {"U64": value}
        elif isinstance(value, list) and all(isinstance(v, int) for v in value):
            out[key] = {"I64List": value}
        elif isinstance(value, list):
            out[key] = {"F64List": [float(v) for v in value]}
    return out


# References to a reply list that only `Strategy.start` (its local variable) and the
# wrapper around `aggregate_*` hold, as `sys.getrefcount` counts them in `_release`.
_ONLY_START_HOLDS = 4


def _release(replies):
    """Empties a round's reply list once it is aggregated, if nothing but `Strategy.start`
    holds it: `start` keeps the list in a local variable until the next round's replies
    replace it, so a round's models would otherwise stay in memory through the next
    round (one model per node: 400 MB at 1,000 nodes of 100k float32). A list the
    strategy kept a reference to is left alone."""
    if type(replies) is list and sys.getrefcount(replies) <= _ONLY_START_HOLDS:
        replies.clear()


def _hook_strategies(rounds):
    """Wraps `Strategy.start` so that every message strategy reports its rounds."""
    try:
        from flwr.serverapp.strategy import Strategy
    except ImportError:
        return
    original = Strategy.start

    def start(self, grid, initial_arrays, num_rounds=3, timeout=3600, train_config=None,
              evaluate_config=None, evaluate_fn=None):
        rounds.num_rounds = num_rounds
        configure_train = self.configure_train
        aggregate_train = self.aggregate_train
        aggregate_evaluate = self.aggregate_evaluate

        def traced_configure_train(server_round, *args, **kwargs):
            rounds.begin(server_round)
            return configure_train(server_round, *args, **kwargs)

        def traced_aggregate_train(server_round, replies):
            out = aggregate_train(server_round, replies)
            rounds.metrics("train", server_round, out[1] if out else None)
            _release(replies)
            return out

        def traced_aggregate_evaluate(server_round, replies):
            out = aggregate_evaluate(server_round, replies)
            rounds.metrics("evaluate", server_round, out)
            _release(replies)
            return out

        traced_evaluate_fn = None
        if evaluate_fn is not None:
            def traced_evaluate_fn(server_round, arrays_):
                out = evaluate_fn(server_round, arrays_)
                rounds.metrics("central", server_round, out)
                return out

        self.configure_train = traced_configure_train
        self.aggregate_train = traced_aggregate_train
        self.aggregate_evaluate = traced_aggregate_evaluate
        try:
            return original(self, grid, initial_arrays, num_rounds, timeout, train_config,
                            evaluate_config, traced_evaluate_fn)
        finally:
            del self.configure_train, self.aggregate_train, self.aggregate_evaluate
            rounds.end()

    Strategy.start = start
    _hook_legacy_server(rounds)


def _hook_legacy_server(rounds):
    """Flower's legacy `Server` (a `server_fn` app): its rounds' aggregated metrics."""
    try:
        from flwr.server import Server
    except ImportError:
        return
    fit_round = Server.fit_round
    evaluate_round = Server.evaluate_round

    def traced_fit_round(self, server_round, timeout):
        out = fit_round(self, server_round, timeout)
        if out is not None:
            rounds.metrics("train", server_round, out[1])
        return out

    def traced_evaluate_round(self, server_round, timeout):
        out = evaluate_round(self, server_round, timeout)
        if out is not None:
            loss, metrics = out[0], dict(out[1] or {})
            if loss is not None:
                metrics = {"loss": float(loss), **metrics}
            rounds.metrics("evaluate", server_round, metrics)
        return out

    Server.fit_round = traced_fit_round
    Server.evaluate_round = traced_evaluate_round


def _make_grid(channel, rounds, run_id, lock):
    from flwr.common.serde import metadata_to_proto
    from flwr.serverapp.grid import Grid

    def request(tag, parts):
        with lock:
            channel.write_parts(tag, parts)
            return answer()

    def answer():
        frame = channel.read()
        if frame is None:
            raise RuntimeError("the flwr process closed the channel: the run was stopped")
        tag, body = frame
        if tag == "E":
            raise RuntimeError(body.decode())
        return tag, body

    def decode(part):
        message = wire.decode_message(part)
        if message.has_content():
            arrays.to_flower(message.content)
        return message

    def pack(messages):
        contents = {}
        order = []
        for message in messages:
            content = message.content if message.has_content() else None
            if content is None:
                raise ValueError("a message the ServerApp sends needs content")
            if id(content) not in contents:
                contents[id(content)] = len(order)
                order.append(wire.encode_record_dict(arrays.with_dtypes(content)))
        parts = [struct.pack("<I", len(order)), *order]
        for message in messages:
            parts.append(metadata_to_proto(message.metadata).SerializeToString())
            parts.append(struct.pack("<I", contents[id(message.content)]))
        return parts

    class FloretGrid(Grid):
        """Flower's Grid, answered by Floret's engine in the `flwr` process."""

        def __init__(self):
            self._run = None

        def set_run(self, run):
            self._run = run

        @property
        def run(self):
            from flwr.supercore.run import Run

            return self._run if self._run is not None else Run.create_empty(run_id)

        def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
            from flwr.app import Message

            return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

        def get_node_ids(self):
            _, body = request("N", [])
            return [_U64.unpack_from(body, i)[0] for i in range(0, len(body), 8)]

        def push_messages(self, messages):
            messages = list(messages)
            _, body = request("P", pack(messages))
            ids = [bytes(p).decode() for p in frames.unpack_parts(body)]
            for message, message_id in zip(messages, ids):
                message.metadata.__dict__["_message_id"] = message_id
            return ids

        def pull_messages(self, message_ids):
            _, body = request("L", [m.encode() for m in message_ids])
            return [decode(p) for p in frames.unpack_parts(body)]

        def send_and_receive(self, messages, *, timeout=None):
            messages = list(messages)
            if not messages:
                return []
            kind = messages[0].metadata.message_type.split(".")[0]
            if threading.current_thread() is threading.main_thread():
                replies = self._stream(messages, timeout)
            else:
                replies = self._poll(messages, timeout)
            errors = sum(1 for r in replies if r.has_error())
            group_id = messages[0].metadata.group_id
            with lock:
                rounds.phase(kind, len(messages), len(replies) - errors, errors, group_id)
            return replies

        def _stream(self, messages, timeout):
            """Sends and receives in one request, replies streamed as they arrive: a
            strategy's round from the main thread."""
            t = b"" if timeout is None else repr(float(timeout)).encode()
            replies = []
            with lock:
                channel.write_parts("W", [t, *pack(messages)])
                while True:
                    tag, body = answer()
                    replies.extend(decode(p) for p in frames.unpack_parts(body))
                    if tag == "L":
                        return replies

        def _poll(self, messages, timeout):
            """Push, then pull every 10 ms, as Flower's InMemoryGrid does: calls from
            several threads at once (the legacy ServerApp's) share the channel."""
            waiting = set(self.push_messages(messages))
            end = None if timeout is None else time.monotonic() + timeout
            replies = []
            while waiting and (end is None or time.monotonic() < end):
                got = list(self.pull_messages(waiting))
                replies.extend(got)
                waiting.difference_update(r.metadata.reply_to_message_id for r in got)
                if waiting:
                    time.sleep(0.01)
            return replies

    return FloretGrid()


def _int(value):
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _set_identity(run_id):
    """Flower's Message constructor reads the run and node from the process's identity."""
    try:
        from flwr.common.constant import SUPERLINK_NODE_ID
        from flwr.supercore.task_identity import TaskIdentity
    except ImportError:  # a Flower before 1.42 has no task identity
        return
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID


def fork_workers(channel, app_dir, body):
    """Forks ClientApp workers from this process ('K': the `flwr` process's socket path,
    how many, the ClientApp component); returns how many it forked.

    This process has imported Flower and numpy already (half a second of CPU each time);
    a forked worker starts from there and only imports the app's ClientApp module, and it
    shares the imported code's memory with this process until either writes to it. Each
    connects to the socket and speaks as a spawned worker does on its pipes. No fork
    where it would be unsafe (another thread running, CUDA initialised): `flwr` then
    spawns the workers as before.
    """
    import os

    path, count, component = (bytes(p).decode() for p in frames.unpack_parts(body))
    torch = sys.modules.get("torch")
    if (
        not hasattr(os, "fork")
        or threading.active_count() > 1
        or (torch is not None and getattr(torch.cuda, "is_initialized", lambda: False)())
    ):
        return 0
    flwr_pid = os.getppid()
    connected = []
    for _ in range(int(count)):
        sys.stderr.flush()
        try:
            done_r, done_w = os.pipe()
        except OSError:
            break
        try:
            pid = os.fork()
        except OSError:  # no more processes for now: `flwr` spawns the rest
            os.close(done_r)
            os.close(done_w)
            break
        if pid == 0:  # the worker: never returns into this function's caller
            code = 1
            try:
                os.close(done_r)
                channel.close()
                from . import worker

                code = worker.serve_forked(app_dir, component, path, flwr_pid, done_w)
            except BaseException:  # reported like any worker's failure, then gone
                traceback.print_exc(file=sys.stderr)
            finally:
                sys.stderr.flush()
                os._exit(code)
        os.close(done_w)
        connected.append(done_r)
    # Each worker writes a byte once connected; one that died first closes its pipe
    # empty. `flwr` then accepts exactly the connections that are there.
    forked = 0
    for done in connected:
        try:
            forked += len(os.read(done, 1))
        finally:
            os.close(done)
    return forked


def serve(app_dir, component):
    """Runs the ServerApp once for the run the `flwr` process sends; returns the exit code."""
    channel = frames.claim_stdio()
    try:
        app = load(app_dir, component, "serverapp")
    except ComponentError as e:
        channel.write("F", str(e).encode())
        return 2
    from flwr.common.serde import context_from_proto
    from flwr.proto.message_pb2 import Context as ProtoContext

    npy.install()
    fastpaths.install()
    # What the imports made lives as long as the process: the cyclic collector need not
    # walk it again on every full collection (a few percent of a worker's time).
    gc.freeze()
    channel.write("R")
    frame = channel.read()
    while frame is not None and frame[0] == "K":
        channel.write("k", str(fork_workers(channel, app_dir, frame[1])).encode())
        frame = channel.read()
    if frame is None:
        return 0
    tag, body = frame
    proto = ProtoContext()
    proto.ParseFromString(body)
    context = context_from_proto(proto)
    _set_identity(context.run_id)
    # One request and its answer at a time: Flower's legacy ServerApp (server_fn) calls
    # the Grid from a thread pool and a node-watching thread.
    lock = threading.RLock()
    rounds = Rounds(channel, lock)
    rounds.num_rounds = _int(context.run_config.get("num-server-rounds"))
    _hook_strategies(rounds)
    grid = _make_grid(channel, rounds, context.run_id, lock)
    try:
        app(grid, context)
    except BaseException as e:  # the run fails with the app's reason
        traceback.print_exc(file=sys.stderr)
        rounds.end()
        channel.write("X", f"the ServerApp raised {type(e).__name__}: {e}".encode())
        return 1
    rounds.end()
    channel.write("D")
    return 0
