"""Protobuf messages as partners see them: JSON objects, and the pydantic models that document them.

The JSON is the protobuf message with its field names, with three changes that make it pleasant
to use from any language: enum values are the lower-case name without the type's prefix
(``PARTY_KIND_PERSON`` is ``"person"``), 64-bit integers are numbers, and timestamps are RFC 3339
strings. The same rules produce the OpenAPI schema, so the document and the wire never disagree.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Optional, TypeVar

from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel, ConfigDict, Field, create_model

from collabnet_kit.bus import message_class
from collabnet_kit.errors import FieldViolation, InvalidArgument

_INTS = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_SFIXED64,
}
_32_BITS = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_SFIXED32,
}
_UNSIGNED = {
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_FIXED64,
}
_FLOATS = {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT}
_TIMESTAMP = "google.protobuf.Timestamp"
_DURATION = "google.protobuf.Duration"
# A FieldMask in JSON: the field paths, comma-separated ("policy.case_rating_threshold,title").
_FIELD_MASK = "google.protobuf.FieldMask"
# The proto3 JSON form of a Duration: seconds with up to nine decimals and an "s".
_DURATION_PATTERN = r"^-?[0-9]+(\.[0-9]{1,9})?s$"


def _enum_prefix(enum: EnumDescriptor) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"


M = TypeVar("M", bound=Message)


def message_type(field: FieldDescriptor) -> Descriptor:
    """The message type of a message field."""
    assert field.message_type is not None, field.full_name
    return field.message_type


def enum_type(field: FieldDescriptor) -> EnumDescriptor:
    """The enum type of an enum field."""
    assert field.enum_type is not None, field.full_name
    return field.enum_type


def output_type(method: MethodDescriptor) -> Descriptor:
    """The reply message of an RPC."""
    assert method.output_type is not None, method.full_name
    return method.output_type


def fields_of(descriptor: Any) -> list[FieldDescriptor]:
    """A descriptor's fields (the C implementation's descriptors are typed apart from the Python ones)."""
    return list(descriptor.fields)


def enum_names(enum: EnumDescriptor) -> dict[int, str]:
    """Enum numbers to their JSON names; the zero value (UNSPECIFIED) has none."""
    prefix = _enum_prefix(enum)
    return {v.number: v.name.removeprefix(prefix).lower() for v in enum.values if v.number != 0}


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and message_type(field).GetOptions().map_entry


def _repeated(field: FieldDescriptor) -> bool:
    return field.is_repeated


def timestamp_json(stamp: Timestamp) -> str:
    """A Timestamp in RFC 3339, in UTC with a ``Z``."""
    return stamp.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def _scalar_json(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_ENUM:
        return enum_names(enum_type(field)).get(value)
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if message_type(field).full_name == _TIMESTAMP:
            return timestamp_json(value)
        if message_type(field).full_name == _DURATION:
            return value.ToJsonString()
        if message_type(field).full_name == _FIELD_MASK:
            return ",".join(value.paths)
        return to_json(value)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return value.hex()
    return value


def to_json(message: Message) -> dict[str, Any]:
    """A message as a JSON object: every field, unset message fields and absent optionals left out."""
    out: dict[str, Any] = {}
    for field in fields_of(message.DESCRIPTOR):
        value = getattr(message, field.name)
        if _is_map(field):
            value_field = message_type(field).fields_by_name["value"]
            out[field.name] = {k: _scalar_json(value_field, v) for k, v in value.items()}
        elif _repeated(field):
            out[field.name] = [_scalar_json(field, v) for v in value]
        elif field.has_presence:
            if message.HasField(field.name):
                out[field.name] = _scalar_json(field, value)
        else:
            out[field.name] = _scalar_json(field, value)
    return out


def unpack(packed: AnyMessage) -> Message:
    """The message inside an ``Any``. Its type must be one this process has imported (every event
    type partners may see is: ``webhooks.EVENTS``); ``KeyError`` otherwise."""
    message = message_class(packed.TypeName())()
    if not packed.Unpack(message):
        raise KeyError(packed.type_url)
    return message


def _parse_timestamp(value: Any, path: str) -> Timestamp:
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgument.field(path, "must be an RFC 3339 timestamp such as 2026-11-22T10:00:00Z") from None
    if moment.tzinfo is None:
        raise InvalidArgument.field(path, "must carry a time zone (Z or an offset)")
    stamp = Timestamp()
    try:
        stamp.FromDatetime(moment.astimezone(UTC))
    except (OverflowError, ValueError):
        raise InvalidArgument.field(path, "must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z") from None
    return stamp


def int_range(field: FieldDescriptor) -> tuple[int, int]:
    """The values an integer field can hold."""
    if field.type in _UNSIGNED:
        return 0, 2**32 - 1 if field.type in _32_BITS else 2**64 - 1
    bound = 2**31 if field.type in _32_BITS else 2**63
    return -bound, bound - 1


def int_annotation(field: FieldDescriptor, *, strict: bool = True) -> Any:
    """An integer field's type, with its range. In JSON bodies a number and nothing else (strict);
    in query strings, text that reads as one."""
    low, high = int_range(field)
    return Annotated[int, Field(ge=low, le=high, strict=strict)]


def _parse_duration(value: Any, path: str) -> Duration:
    duration = Duration()
    if not isinstance(value, str) or not re.match(_DURATION_PATTERN, value):
        raise InvalidArgument.field(path, 'must be a duration in seconds such as "86400s" or "1.5s"')
    duration.FromJsonString(value)
    return duration


def _scalar_value(field: FieldDescriptor, value: Any, path: str) -> Any:
    if field.type == FieldDescriptor.TYPE_ENUM:
        names = {name: number for number, name in enum_names(enum_type(field)).items()}
        if value not in names:
            raise InvalidArgument.field(path, f"must be one of: {', '.join(sorted(names))}")
        return names[value]
    if field.type == FieldDescriptor.TYPE_BYTES:
        try:
            return bytes.fromhex(str(value))
        except ValueError:
            raise InvalidArgument.field(path, "must be hexadecimal") from None
    if field.type in _INTS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidArgument.field(path, "must be an integer")
        low, high = int_range(field)
        if not low <= value <= high:
            raise InvalidArgument.field(path, f"must be between {low} and {high}")
        return value
    if field.type in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidArgument.field(path, "must be a number")
        return float(value)
    if field.type == FieldDescriptor.TYPE_BOOL:
        if not isinstance(value, bool):
            raise InvalidArgument.field(path, "must be true or false")
        return value
    if not isinstance(value, str):
        raise InvalidArgument.field(path, "must be a string")
    return value


def fill(message: M, data: dict[str, Any], path: str = "") -> M:
    """Set ``message``'s fields from a JSON object; an unknown or ill-typed field is INVALID_ARGUMENT naming it."""
    fields = {f.name: f for f in fields_of(message.DESCRIPTOR)}
    violations: list[FieldViolation] = []
    for name, value in data.items():
        where = f"{path}{name}"
        if name not in fields:
            violations.append(FieldViolation(where, "is not a field of this request"))
            continue
        if value is None:
            continue
        field = fields[name]
        try:
            _set(message, field, value, where)
        except InvalidArgument as error:
            violations += error.violations
    for oneof in message.DESCRIPTOR.oneofs:
        given = [f.name for f in oneof.fields if data.get(f.name) is not None]
        if len(given) > 1 and not _synthetic(oneof):
            violations += [FieldViolation(f"{path}{name}", f"give only one of: {', '.join(given)}") for name in given]
    if violations:
        raise InvalidArgument("; ".join(f"{v.field}: {v.description}" for v in violations), violations)
    return message


def _synthetic(oneof: Any) -> bool:
    """The oneof protoc makes for a proto3 ``optional`` field."""
    return len(oneof.fields) == 1 and str(oneof.name).startswith("_")


def _set(message: Message, field: FieldDescriptor, value: Any, where: str) -> None:
    target = getattr(message, field.name)
    if _is_map(field):
        if not isinstance(value, dict):
            raise InvalidArgument.field(where, "must be an object")
        value_field = message_type(field).fields_by_name["value"]
        for key, item in value.items():
            target[str(key)] = _scalar_value(value_field, item, f"{where}.{key}")
    elif _repeated(field):
        if not isinstance(value, list):
            raise InvalidArgument.field(where, "must be a list")
        for index, item in enumerate(value):
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                _message_value(target.add(), field, item, f"{where}[{index}]")
            else:
                target.append(_scalar_value(field, item, f"{where}[{index}]"))
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        _message_value(target, field, value, where)
    else:
        setattr(message, field.name, _scalar_value(field, value, where))


def _message_value(target: Message, field: FieldDescriptor, value: Any, where: str) -> None:
    if message_type(field).full_name == _TIMESTAMP:
        target.CopyFrom(_parse_timestamp(value, where))
        return
    if message_type(field).full_name == _DURATION:
        target.CopyFrom(_parse_duration(value, where))
        return
    if message_type(field).full_name == _FIELD_MASK:
        if not isinstance(value, str):
            raise InvalidArgument.field(where, 'must be field paths separated by commas, such as "title,description"')
        target.SetInParent()
        target.paths.extend(p.strip() for p in value.split(",") if p.strip())  # type: ignore[attr-defined]
        return
    if not isinstance(value, dict):
        raise InvalidArgument.field(where, "must be an object")
    fill(target, value, f"{where}.")
    target.SetInParent()


class Models:
    """Pydantic models of protobuf messages, for the OpenAPI document; built once each."""

    def __init__(self) -> None:
        self._built: dict[tuple[str, frozenset[str]], type[BaseModel]] = {}
        self._building: set[str] = set()

    def of(
        self, descriptor: Descriptor, *, exclude: frozenset[str] = frozenset(), name: str | None = None
    ) -> type[BaseModel]:
        key = (descriptor.full_name, exclude)
        if key not in self._built:
            self._building.add(descriptor.full_name)
            fields: dict[str, Any] = {}
            for field in descriptor.fields:
                if field.name in exclude:
                    continue
                fields[field.name] = (Optional[self._annotation(field)], None)  # noqa: UP045
            self._building.discard(descriptor.full_name)
            model_name = name or descriptor.full_name.replace("collabnet.", "").replace(".v1.", "").replace(".", "")
            if exclude:
                model_name += "Body"
            self._built[key] = create_model(
                model_name, __config__=ConfigDict(extra="forbid", title=model_name), **fields
            )
        return self._built[key]

    def _annotation(self, field: FieldDescriptor) -> Any:
        if _is_map(field):
            return dict[str, self._scalar_annotation(message_type(field).fields_by_name["value"])]  # type: ignore[misc]
        single = self._scalar_annotation(field)
        return list[single] if _repeated(field) else single  # type: ignore[valid-type]

    def _scalar_annotation(self, field: FieldDescriptor) -> Any:
        if field.type == FieldDescriptor.TYPE_ENUM:
            names = tuple(enum_names(enum_type(field)).values())
            return Literal[names] if names else str
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if message_type(field).full_name == _TIMESTAMP:
                return datetime
            if message_type(field).full_name in self._building:
                # A message that contains itself (a tree): documented as an object of the same shape.
                return dict[str, Any]
            if message_type(field).full_name == _DURATION:
                return Annotated[str, Field(pattern=_DURATION_PATTERN, examples=["86400s"])]
            if message_type(field).full_name == _FIELD_MASK:
                return Annotated[str, Field(examples=["title,description"])]
            return self.of(message_type(field))
        if field.type in _INTS:
            return int_annotation(field)
        if field.type in _FLOATS:
            return Annotated[float, Field(strict=True)]
        if field.type == FieldDescriptor.TYPE_BOOL:
            return Annotated[bool, Field(strict=True)]
        return Annotated[str, Field(strict=True)]
