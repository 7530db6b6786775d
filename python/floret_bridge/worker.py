"""A ClientApp worker: loads the user's ClientApp once, then answers call after call.

Each call is one frame 'C' with two parts, a `flwr.proto.Message` and the node's
`flwr.proto.Context`; the answer is a frame 'C' with three: b"c" and the reply's content
(a `flwr.proto.RecordDict`), or b"e" and the error reply's reason; then the Context as
the app left it (its `state` is what the next call on that node sees). Floret builds the
reply's metadata itself, so only the content crosses. Whatever the
app does, the worker answers and goes on: an exception becomes an error reply with the
exception's type and text, as Flower's own ClientApp runner does, and a return value
that is not a Message becomes an error reply saying so.
"""

import gc
import sys
import traceback

from . import arrays, fastpaths, frames, npy, wire
from .components import ComponentError, load

# Flower's ErrorCode.CLIENT_APP_RAISED_EXCEPTION.
CLIENT_APP_RAISED_EXCEPTION = 2


def serve(app_dir, component):
    """Runs the worker loop until the `flwr` process closes the pipe; returns the exit code."""
    return serve_channel(frames.claim_stdio(), app_dir, component)


def serve_forked(app_dir, component, socket_path, flwr_pid, connected_fd):
    """A worker forked from the ServerApp's process (`server.fork_workers`): the same loop,
    on a Unix socket the `flwr` process listens on, instead of stdin/stdout. Writes a
    byte to `connected_fd` once connected."""
    import os
    import socket

    _reseed_after_fork()
    _exit_with(flwr_pid)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:  # room for a whole reply, as the spawned workers' pipes have (`frames`)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, frames.PIPE_SIZE)
    except OSError:
        pass
    try:
        sock.connect(socket_path)
        os.write(connected_fd, b"1")
    finally:
        os.close(connected_fd)
    channel = frames.Channel(sock.makefile("rb", buffering=1 << 16),
                             sock.makefile("wb", buffering=1 << 16))
    sock.close()  # the two files hold the connection now
    try:
        return serve_channel(channel, app_dir, component)
    finally:
        channel.close()


def _reseed_after_fork():
    """Gives this forked process random state of its own, as a newly started one has.

    Python's `random` reseeds itself in a forked child; numpy's global generator (and
    torch's, when the parent imported it) would otherwise repeat the parent's, so every
    worker would draw the same "random" numbers from `np.random`.
    """
    import numpy as np

    np.random.seed()
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.seed()


def _exit_with(pid):
    """Ends this process once process `pid` (the `flwr` that uses it) is gone, even while
    the app's code runs: a spawned worker is killed by `flwr`, a forked one is not its
    child. A closed socket already ends an idle worker."""
    import os
    import threading
    import time

    def watch():
        while True:
            time.sleep(1.0)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:  # alive, someone else's: not ours to watch
                pass

    threading.Thread(target=watch, name="floret-watchdog", daemon=True).start()


def serve_channel(channel, app_dir, component):
    """The worker loop on `channel`; returns the exit code."""
    try:
        app = load(app_dir, component, "clientapp")
    except ComponentError as e:
        channel.write("F", str(e).encode())
        return 2
    from flwr.app import Error, Message
    from flwr.common.serde import context_to_proto

    try:
        from flwr.supercore.task_identity import TaskIdentity
    except ImportError:  # a Flower before 1.42 has no task identity
        TaskIdentity = None

    npy.install()
    fastpaths.install()
    # What the imports made lives as long as the process: the cyclic collector need not
    # walk it again on every full collection (a few percent of a worker's time).
    gc.freeze()
    channel.write("R")
    while True:
        frame = channel.read()
        if frame is None:
            return 0
        tag, body = frame
        if tag != "C":
            print(f"floret_bridge: unexpected frame {tag!r}", file=sys.stderr)
            return 1
        message_part, context_part = frames.unpack_parts(body)
        message = wire.decode_message(message_part)
        if message.has_content():
            arrays.to_flower(message.content)
        context = wire.decode_context(context_part)
        del message_part, context_part, body
        if TaskIdentity is not None:
            # Flower's Message constructor reads the run and node from here.
            TaskIdentity.task_id = 1
            TaskIdentity.run_id = context.run_id
            TaskIdentity.node_id = context.node_id
        try:
            reply = app(message, context)
            if not isinstance(reply, Message):
                reply = Message(
                    Error(
                        CLIENT_APP_RAISED_EXCEPTION,
                        f"the ClientApp returned a {type(reply).__name__}, not a Message: "
                        f"return Message(content=..., reply_to=msg) from its "
                        f"{message.metadata.message_type} function",
                    ),
                    reply_to=message,
                )
        except Exception as e:  # the app's failure is the reply, as in Flower
            traceback.print_exc(file=sys.stderr)
            reply = Message(
                Error(CLIENT_APP_RAISED_EXCEPTION, f"{type(e).__name__}: {e}"),
                reply_to=message,
            )
        if reply.has_content():
            answer = [[b"c"], wire.encode_record_dict_segments(arrays.with_dtypes(reply.content))]
        else:
            answer = [[b"e"], [reply.error.reason.encode()]]
        del reply, message
        # Floret keeps only the state of the context that comes back; an empty state is
        # an empty `flwr.proto.Context` (every field at its default), not worth encoding.
        state = context_to_proto(context).SerializeToString() if len(context.state) else b""
        del context
        channel.write_segmented_parts("C", [*answer, [state]])
        del answer
