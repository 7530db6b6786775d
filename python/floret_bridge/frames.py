"""The channel to the `flwr` process: frames over the stdin/stdout this process was given.

A frame is a little-endian u32 length, a one-byte tag and a body of that length minus
one. Most bodies are a list of parts, each a u32 length and its bytes. The process's own
stdout is moved to stderr first (`claim_stdio`), so a `print()` in the user's app lands
in the log instead of the middle of a frame.
"""

import os
import struct
import sys

_LEN = struct.Struct("<I")


class Channel:
    """Reads and writes frames on two raw file descriptors."""

    def __init__(self, reader, writer):
        self._reader = reader
        self._writer = writer

    def read(self):
        """The next frame as (tag, body), or None when the other side closed the pipe."""
        head = self._read_exact(5)
        if head is None:
            return None
        (length,) = _LEN.unpack_from(head)
        body = self._read_exact(length - 1) if length > 1 else b""
        if body is None:
            return None
        return chr(head[4]), body

    def write(self, tag, body=b""):
        """Writes one frame and flushes it."""
        self._writer.write(_LEN.pack(len(body) + 1) + tag.encode("ascii"))
        self._writer.write(body)
        self._writer.flush()

    def close(self):
        """Closes both ends (a forked worker lets go of its parent's pipes)."""
        for f in (self._reader, self._writer):
            try:
                f.close()
            except OSError:
                pass

    def write_parts(self, tag, parts):
        """Writes one frame whose body is `parts` (bytes each)."""
        self.write(tag, pack_parts(parts))

    def write_segmented_parts(self, tag, parts):
        """Writes one frame whose body is `parts`, each a list of segments (bytes-like)
        that make it up: large arrays go from their own buffers to the pipe in one
        `writev`, never copied into a frame first."""
        out = []
        total = 0
        for segments in parts:
            size = sum(len(s) for s in segments)
            out.append(_LEN.pack(size))
            out.extend(segments)
            total += 4 + size
        head = _LEN.pack(total + 1) + tag.encode("ascii")
        self._writer.flush()
        _writev_all(self._writer.fileno(), [head, *out])

    def _read_exact(self, n):
        buf = self._reader.read(n)
        if buf is None or len(buf) < n:
            if not buf:
                return None
            chunks = [buf]
            got = len(buf)
            while got < n:
                more = self._reader.read(n - got)
                if not more:
                    return None
                chunks.append(more)
                got += len(more)
            buf = b"".join(chunks)
        return buf


_IOV_MAX = 1024


def _writev_all(fd, buffers):
    """Writes every buffer, in order, whatever the pipe takes per call."""
    if len(buffers) <= _IOV_MAX:
        written = os.writev(fd, buffers)
        if written == sum(len(b) for b in buffers):
            return  # the whole frame at once: the pipe had room for it
    else:
        written = 0
    views = [memoryview(b).cast("B") for b in buffers if len(b)]
    while written and views:  # drop what the first call wrote
        if written >= len(views[0]):
            written -= len(views.pop(0))
        else:
            views[0] = views[0][written:]
            written = 0
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if written:
            views[0] = views[0][written:]


def pack_parts(parts):
    """A body of parts: each a u32 length and its bytes."""
    out = []
    for part in parts:
        out.append(_LEN.pack(len(part)))
        out.append(part)
    return b"".join(out)


def unpack_parts(body):
    """The parts of a body written by `pack_parts` (memoryviews into `body`)."""
    view = memoryview(body)
    parts = []
    at = 0
    while at < len(view):
        (n,) = _LEN.unpack_from(view, at)
        at += 4
        parts.append(view[at : at + n])
        at += n
    return parts


# Linux's F_SETPIPE_SZ; Python's fcntl module names it from 3.10 on, on Linux only.
_F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20


def _widen_pipe(fd):
    """Gives the pipe on `fd` room for a whole model (1 MiB, the most Linux grants without
    privileges) instead of 64 KiB: a 400 KB message then crosses in one write and one
    read instead of seven rounds of filling, waking the reader and draining. Where the
    system refuses (another OS, a lower limit, not a pipe), the pipe stays as it is."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", _F_SETPIPE_SZ), PIPE_SIZE)
    except (ImportError, OSError):
        pass


def claim_stdio():
    """The channel on this process's stdin/stdout; fd 1 then points at stderr."""
    if sys.platform.startswith("linux"):
        _widen_pipe(0)
        _widen_pipe(1)
    channel_out = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    reader = os.fdopen(0, "rb", buffering=1 << 16)
    writer = os.fdopen(channel_out, "wb", buffering=1 << 16)
    return Channel(reader, writer)
