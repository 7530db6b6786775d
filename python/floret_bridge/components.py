"""Loading an app's component (`pkg.module:attr`) as Flower does, with one-line errors."""

import importlib
import sys


class ComponentError(Exception):
    """A component that cannot be used; the text names the problem and the fix."""


def load(app_dir, component, kind):
    """The object `component` names, imported with `app_dir` first on sys.path.

    `kind` is "serverapp" or "clientapp"; the object must be Flower's ServerApp or
    ClientApp.
    """
    module_name, sep, attr = component.partition(":")
    if not sep or not module_name or not attr:
        raise ComponentError(
            f"{kind} = {component!r} is not `module:attribute`: write it as Flower does, "
            f'e.g. {kind} = "mypkg.{"server_app" if kind == "serverapp" else "client_app"}:app"'
        )
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise ComponentError(
                f"{kind} {component!r}: no module {e.name!r} under {app_dir}: "
                f"check [tool.flwr.app.components] in pyproject.toml"
            ) from e
        raise ComponentError(
            f"{kind} {component!r} imports {e.name!r}, which this Python does not have: "
            f"install it ({sys.executable} -m pip install {e.name}) or pass --python"
        ) from e
    except BaseException as e:  # the app's own code raised at import
        import traceback

        traceback.print_exc(file=sys.stderr)
        raise ComponentError(
            f"{kind} {component!r} raised at import: {type(e).__name__}: {e} "
            f"(fix the app's module {module_name}; the traceback is above)"
        ) from e
    try:
        obj = getattr(module, attr)
    except AttributeError as e:
        raise ComponentError(
            f"{kind} {component!r}: module {module_name} has no attribute {attr!r}: "
            f"check [tool.flwr.app.components] in pyproject.toml"
        ) from e
    if kind == "serverapp":
        from flwr.serverapp import ServerApp as expected
    else:
        from flwr.clientapp import ClientApp as expected
    if not isinstance(obj, expected):
        raise ComponentError(
            f"{kind} {component!r} is of type {type(obj).__name__}, not a Flower "
            f"{expected.__name__}: point it at `app = {expected.__name__}(...)`"
        )
    return obj
