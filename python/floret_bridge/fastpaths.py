"""Flower's record containers without the per-call cost of their type annotations.

Every `ArrayRecord`, `MetricRecord`, `ConfigRecord` and `RecordDict` is a Flower
`TypedDict`, whose item methods wrap each access in `typing.cast(Callable[[K], None],
...)` or `cast(dict[K, V], ...)`. `cast` does nothing at run time, but its first argument
is built anew on every call (`Callable[[K], None]` is a typing object made in Python), so
setting one item costs about 25 µs: with ten arrays per model, a ClientApp call spends
more in `ArrayRecord(ndarrays)` and the RecordDicts around it than in reading its
message. `install` replaces those methods with ones that do the same steps (the same key
and value checks, in the same order, raising the same errors, on the same attributes)
without the `cast`s; `python/tests/test_fastpaths.py` holds them to Flower's behaviour.

`RecordDict.array_records` (and `metric_records`, `config_records`) build a synced view
by setting each matching record into it, and every such set writes the record back into
the RecordDict under its own key (a no-op: the same object where it already is) through
`RecordDict.__setitem__`, which looks the key up first. Flower's FedAvg asks for these
views four times per reply while it aggregates, with the ClientApps idle. The views are
built here with the same class, checks passed by construction and the write-back left out
(only for a plain `RecordDict`: a subclass keeps Flower's own properties).

Only for Flower 1.42, whose `TypedDict` these were read from: any other version keeps its
own methods.
"""

_KNOWN_VERSIONS = ("1.42.",)

ORIGINALS = {}
"""Flower's own methods, by name, as they were before `install` replaced them."""


def install():
    """Replaces `TypedDict`'s item methods; returns whether it did."""
    try:
        import flwr
        from flwr.app.message.typeddict import TypedDict
    except ImportError:
        return False
    if not str(getattr(flwr, "__version__", "")).startswith(_KNOWN_VERSIONS):
        return False
    probe = TypedDict(len, len)
    if list(probe.__dict__) != ["_check_key_fn", "_check_value_fn", "_data"]:
        return False

    def __setitem__(self, key, value):
        """Set the given key to the given value after type checking."""
        d = self.__dict__
        d["_check_key_fn"](key)
        d["_check_value_fn"](value)
        d["_data"][key] = value

    def __delitem__(self, key):
        """Remove the item with the specified key."""
        del self.__dict__["_data"][key]

    def __getitem__(self, item):
        """Return the value for the specified key."""
        return self.__dict__["_data"][item]

    def __iter__(self):
        """Yield an iterator over the keys of the dictionary."""
        return iter(self.__dict__["_data"])

    def __len__(self):
        """Return the number of items in the dictionary."""
        return len(self.__dict__["_data"])

    def __contains__(self, key):
        """Check if the dictionary contains the specified key."""
        return key in self.__dict__["_data"]

    def keys(self):
        """D.keys() -> a set-like object providing a view on D's keys."""
        return self.__dict__["_data"].keys()

    def values(self):
        """D.values() -> an object providing a view on D's values."""
        return self.__dict__["_data"].values()

    def items(self):
        """D.items() -> a set-like object providing a view on D's items."""
        return self.__dict__["_data"].items()

    for method in (
        __setitem__, __delitem__, __getitem__, __iter__, __len__, __contains__, keys,
        values, items,
    ):
        original = ORIGINALS.setdefault(method.__name__, TypedDict.__dict__[method.__name__])
        method.__qualname__ = original.__qualname__
        method.__module__ = original.__module__
        setattr(TypedDict, method.__name__, method)
    _install_views()
    return True


def _install_views():
    from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
    from flwr.app.message import recorddict as module

    synced = getattr(module, "_SyncedDict", None)
    if synced is None:
        return
    for name, allowed in (
        ("array_records", ArrayRecord),
        ("metric_records", MetricRecord),
        ("config_records", ConfigRecord),
    ):
        original = ORIGINALS.setdefault(name, RecordDict.__dict__[name])
        if not isinstance(original, property):
            continue
        setattr(RecordDict, name, property(_view(original.fget, synced, allowed),
                                           doc=original.__doc__))


def _view(flowers, synced_dict, allowed):
    def view(self):
        if type(self) is not RecordDict_:
            return flowers(self)
        out = synced_dict[allowed](self, allowed)
        items = out.__dict__["_data"]
        for key, record in self.__dict__["_data"].items():
            if isinstance(record, allowed):
                items[key] = record
        return out

    from flwr.app import RecordDict as RecordDict_

    view.__name__ = flowers.__name__
    view.__qualname__ = flowers.__qualname__
    view.__module__ = flowers.__module__
    return view
