"""`python -m floret_bridge {clientapp|serverapp} APP_DIR COMPONENT`, or `check`."""

import sys


def _keep_freed_memory():
    """Tells glibc's allocator to keep the memory Python frees for reuse instead of handing
    it back to the kernel at once.

    Every ClientApp call allocates and frees a model's worth of buffers (the message read
    from the pipe, its arrays, the reply's). By default glibc serves blocks above 128 KiB
    with fresh `mmap`s and trims the top of its heap as soon as 128 KiB are free there, so
    each call pays the kernel to fault in, zero and unmap those pages again: about 15% of a
    worker's CPU time for a 400 KB model. With these limits (mmap only above 32 MiB,
    trim only above 1 GiB free) freed blocks are reused; a process's peak memory is
    unchanged (it is the same blocks), it just keeps them until it exits. Elsewhere than
    glibc nothing changes.
    """
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_trim_threshold, 1 << 30)
    mallopt(m_mmap_threshold, 32 << 20)


def main(argv):
    if len(argv) == 1 and argv[0] == "check":
        # The `flwr` process asks whether this Python can run Flower apps at all.
        try:
            import flwr  # noqa: F401
            from flwr.common.serde import message_from_proto  # noqa: F401
        except ImportError as e:
            print(f"no usable flwr ({e})")
            return 3
        print(flwr.__version__)
        return 0
    if len(argv) != 3 or argv[0] not in ("clientapp", "serverapp"):
        print(
            "usage: python -m floret_bridge {clientapp|serverapp} APP_DIR COMPONENT",
            file=sys.stderr,
        )
        return 2
    kind, app_dir, component = argv
    _keep_freed_memory()
    try:
        import flwr  # noqa: F401
        import numpy  # noqa: F401
    except ImportError as e:
        from . import frames

        channel = frames.claim_stdio()
        channel.write(
            "F",
            (
                f"{sys.executable} cannot run Flower apps ({e}): install Flower in it "
                f"(`{sys.executable} -m pip install flwr==1.42.0`), or pass --python PATH "
                f"(or set FLORET_PYTHON) to the Python that has it"
            ).encode(),
        )
        return 2
    if kind == "clientapp":
        from .worker import serve
    else:
        from .server import serve
    return serve(app_dir, component)


sys.exit(main(sys.argv[1:]))
