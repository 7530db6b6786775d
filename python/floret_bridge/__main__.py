"""`python -m floret_bridge {clientapp|serverapp} APP_DIR COMPONENT`, or `check`."""

import sys


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
