"""Flower's objects to and from `flwr.proto` bytes, faster than Flower's serde.

Encoding: Flower's serde builds a protobuf object per array and copies every array's
data into it before serialising; for a model of a few hundred kilobytes that is most of a
ClientApp call's overhead. Array records are written here as the wire format spells them
(a protobuf message is the concatenation of its fields), the small metric and config
records through Flower's serde; Floret decodes the result as any `flwr.proto.RecordDict`.

Decoding: Flower's `message_from_proto` builds every `Array` twice through
`Array.__init__`, whose overloaded-argument checks and per-attribute `__setattr__` are
most of a decode (half a millisecond for a model of ten arrays, in every ClientApp call
and for every reply the ServerApp gets). The protobuf schema already guarantees what
those checks test (dtype and stype are `str`, shape a tuple of `int`, data `bytes`), so
arrays are built here with the attribute dictionary `Array.__init__` leaves, and
everything else (metric and config records, metadata, errors, the Message and Context
themselves) goes through Flower's own functions. `python/tests/test_wire.py` checks the
result against Flower's decode, attribute for attribute.
"""

_LEN = 2  # wire type of length-delimited fields


def _varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number, payload):
    """A length-delimited field: tag, length, payload (bytes-like)."""
    return [_varint((number << 3) | _LEN), _varint(len(payload)), payload]


def _head(number, size):
    """The tag and length of a length-delimited field whose payload is `size` bytes."""
    return _varint((number << 3) | _LEN) + _varint(size)


# An array's bytes on the wire, all but its data, for each (key, dtype, shape, stype,
# data length): a model's arrays are the same shapes in every reply.
_item_prefixes = {}
_PREFIXES_MAX = 4096


def _item_prefix(key, array, size):
    """The bytes of one `ArrayRecord.Item` up to its array's data (`size` bytes)."""
    fields = b""
    if array.dtype:
        fields += b"".join(_field(1, array.dtype.encode()))
    if array.shape:
        shape = b"".join(_varint(d & 0xFFFFFFFFFFFFFFFF) for d in array.shape)
        fields += b"".join(_field(2, shape))
    if array.stype:
        fields += b"".join(_field(3, array.stype.encode()))
    if size:
        fields += _head(4, size)
    key_field = b"".join(_field(1, key.encode()))
    value = _head(2, len(fields) + size) + fields
    item_size = len(key_field) + len(value) + size
    return _head(1, item_size) + key_field + value


def _array_record(record, out):
    """Appends an ArrayRecord's bytes to `out` as segments (the arrays' data as they
    are, uncopied); returns how many bytes they make."""
    total = 0
    for key, array in record.items():
        data = array.data
        size = len(data)
        try:
            cache_key = (key, array.dtype, array.shape, array.stype, size)
            prefix = _item_prefixes.get(cache_key)
        except TypeError:  # an unhashable shape (a list): not remembered
            cache_key, prefix = None, None
        if prefix is None:
            prefix = _item_prefix(key, array, size)
            if cache_key is not None and len(_item_prefixes) < _PREFIXES_MAX:
                _item_prefixes[cache_key] = prefix
        out.append(prefix)
        total += len(prefix)
        if size:
            out.append(data)
            total += size
    return total


def encode_record_dict_segments(record_dict):
    """The `flwr.proto.RecordDict` bytes of a Flower RecordDict as a list of segments
    (their concatenation), arrays' data among them uncopied."""
    from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
    from flwr.common.serde import config_record_to_proto, metric_record_to_proto

    out = []
    for key, record in record_dict.items():
        key_field = b"".join(_field(1, key.encode()))
        if isinstance(record, ArrayRecord):
            segments = []
            size = _array_record(record, segments)
            head = key_field + _head(2, size)
            out.append(_head(1, len(head) + size) + head)
            out.extend(segments)
            continue
        if isinstance(record, MetricRecord):
            body = b"".join(_field(3, metric_record_to_proto(record).SerializeToString()))
        elif isinstance(record, ConfigRecord):
            body = b"".join(_field(4, config_record_to_proto(record).SerializeToString()))
        else:
            raise TypeError(f"record {key!r} is a {type(record).__name__}, not a Flower record")
        out.append(_head(1, len(key_field) + len(body)) + key_field + body)
    return out


def encode_record_dict(record_dict):
    """The `flwr.proto.RecordDict` bytes of a Flower RecordDict."""
    return b"".join(encode_record_dict_segments(record_dict))


class _Flower:
    """Flower's classes and serde functions, imported once, on first use."""

    def __init__(self):
        from flwr.app import Array, ArrayRecord, RecordDict
        from flwr.common import serde
        from flwr.proto.message_pb2 import Context, Message

        self.Array = Array
        self.ArrayRecord = ArrayRecord
        self.RecordDict = RecordDict
        self.serde = serde
        self.ProtoContext = Context
        self.ProtoMessage = Message
        try:
            from flwr.app.message import make_message
            from flwr.common.serde_utils import error_from_proto, metadata_from_proto
        except ImportError:  # another Flower layout: its own decode, unchanged
            self.fast = False
        else:
            self.fast = True
            self.make_message = make_message
            self.error_from_proto = error_from_proto
            self.metadata_from_proto = metadata_from_proto


_F = None


def _flower():
    global _F
    if _F is None:
        _F = _Flower()
    return _F


def new_array(dtype, shape, stype, data):
    """The `Array` that `Array(dtype=dtype, shape=shape, stype=stype, data=data)` makes,
    for arguments already of the types its checks require (str, tuple of int, str,
    bytes): the same class and the same attribute dictionary, in the same order (the
    dirty flag first, as `Array.__setattr__` sets it)."""
    array = object.__new__(_flower().Array)
    array.__dict__.update(_is_dirty=True, dtype=dtype, shape=shape, stype=stype, data=data)
    return array


def array_record_from_proto(record_proto):
    """Flower's `array_record_from_proto`, its arrays made as `new_array` does."""
    f = _flower()
    record = f.ArrayRecord()
    items = record.__dict__["_data"]
    new = object.__new__
    array_class = f.Array
    for item in record_proto.items:
        value = item.value
        array = new(array_class)
        array.__dict__.update(
            _is_dirty=True,
            dtype=value.dtype,
            shape=tuple(value.shape),
            stype=value.stype,
            data=value.data,
        )
        items[item.key] = array
    if items:
        # What ArrayRecord.__setitem__ sets (and ArrayRecord(array_dict) carries over).
        record.__dict__["_is_dirty"] = True
    return record


def recorddict_from_proto(proto):
    """Flower's `recorddict_from_proto`, array records from `array_record_from_proto`."""
    f = _flower()
    out = f.RecordDict()
    for item in proto.items:
        field = item.WhichOneof("value")
        if field == "array_record":
            out[item.key] = array_record_from_proto(item.array_record)
        elif field == "metric_record":
            out[item.key] = f.serde.metric_record_from_proto(item.metric_record)
        elif field == "config_record":
            out[item.key] = f.serde.config_record_from_proto(item.config_record)
        else:
            raise ValueError(f"Unsupported record type: {field}")
    return out


def decode_message(buf):
    """The Flower `Message` that `message_from_proto` makes of `flwr.proto.Message` bytes."""
    f = _flower()
    proto = f.ProtoMessage()
    proto.ParseFromString(buf)
    if not f.fast:
        return f.serde.message_from_proto(proto)
    return f.make_message(
        metadata=f.metadata_from_proto(proto.metadata),
        content=recorddict_from_proto(proto.content) if proto.HasField("content") else None,
        error=f.error_from_proto(proto.error) if proto.HasField("error") else None,
    )


# Decoded contexts with an empty state, by their bytes: a node's context is the same in
# every round (its run and node config), and decoding the configs' values is a tenth of
# a small ClientApp call.
_contexts = {}
_CONTEXTS_MAX = 1 << 16
_CONTEXT_BYTES_MAX = 4096


def decode_context(buf):
    """The Flower `Context` that `context_from_proto` makes of `flwr.proto.Context` bytes:
    Flower's own, its state decoded as `recorddict_from_proto` does. A context seen
    before (and with nothing in its state) is a copy of the first decode, with configs
    of its own: what the app changes in one call's Context never reaches another's."""
    f = _flower()
    key = bytes(buf) if len(buf) <= _CONTEXT_BYTES_MAX else None
    template = _contexts.get(key) if key is not None else None
    if template is not None:
        context = _copy(template)
        context.node_config = dict(template.node_config)
        context.run_config = dict(template.run_config)
        context.state = f.RecordDict()
        return context
    proto = f.ProtoContext()
    proto.ParseFromString(buf)
    if not f.fast:
        return f.serde.context_from_proto(proto)
    has_state = len(proto.state.items) > 0
    state = recorddict_from_proto(proto.state)
    proto.ClearField("state")
    context = f.serde.context_from_proto(proto)
    if key is not None and not has_state and len(_contexts) < _CONTEXTS_MAX:
        template = _contexts[key] = _copy(context)
        template.node_config = dict(context.node_config)
        template.run_config = dict(context.run_config)
    context.state = state
    return context


def _copy(obj):
    """A shallow copy of a plain object (what `copy.copy` makes of a dataclass without
    `__copy__`, for less)."""
    new = object.__new__(type(obj))
    new.__dict__.update(obj.__dict__)
    return new


__all__ = [
    "decode_context",
    "decode_message",
    "encode_record_dict",
    "encode_record_dict_segments",
    "new_array",
]
