"""A RecordDict's `flwr.proto` bytes, written directly.

Flower's serde builds a protobuf object per array and copies every array's data into it
before serialising; for a model of a few hundred kilobytes that is most of a ClientApp
call's overhead. Array records are written here as the wire format spells them (a
protobuf message is the concatenation of its fields), the small metric and config
records through Flower's serde; Floret decodes the result as any `flwr.proto.RecordDict`.
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


def _joined_field(number, parts):
    size = sum(len(p) for p in parts)
    return [_varint((number << 3) | _LEN), _varint(size), *parts]


def _array(array):
    parts = []
    if array.dtype:
        parts += _field(1, array.dtype.encode())
    if array.shape:
        shape = b"".join(_varint(d & 0xFFFFFFFFFFFFFFFF) for d in array.shape)
        parts += _field(2, shape)
    if array.stype:
        parts += _field(3, array.stype.encode())
    if array.data:
        parts += _field(4, array.data)
    return parts


def _array_record(record):
    parts = []
    for key, array in record.items():
        item = _field(1, key.encode()) + _joined_field(2, _array(array))
        parts += _joined_field(1, item)
    return parts


def encode_record_dict(record_dict):
    """The `flwr.proto.RecordDict` bytes of a Flower RecordDict."""
    from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
    from flwr.common.serde import config_record_to_proto, metric_record_to_proto

    parts = []
    for key, record in record_dict.items():
        if isinstance(record, ArrayRecord):
            body = _joined_field(2, _array_record(record))
        elif isinstance(record, MetricRecord):
            body = _field(3, metric_record_to_proto(record).SerializeToString())
        elif isinstance(record, ConfigRecord):
            body = _field(4, config_record_to_proto(record).SerializeToString())
        else:
            raise TypeError(f"record {key!r} is a {type(record).__name__}, not a Flower record")
        parts += _joined_field(1, _field(1, key.encode()) + body)
    return b"".join(parts)


__all__ = ["encode_record_dict"]
