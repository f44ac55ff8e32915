"""Hypothesis strategies for protobuf messages, built from their descriptors.

Every field may be left unset or set to anything its type allows, with the edges over-represented:
integer extremes, NaN and infinities, empty, very long, control-character and non-ASCII strings,
enum numbers nobody defined, Timestamps and Durations outside their valid range, nested messages
down to a depth limit, repeated and map fields, at most one field of each oneof. String fields that
name objects (``*_id``, ``*_ids``) are often given real ids of existing objects, as they are or
slightly altered, so a call gets past "not found" to the rules behind it.

No maintained library builds such strategies from descriptors for current protobuf releases
(hypothesis-pb and hypothesis-protobuf were last released in 2019 and 2015), hence this one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

F = FieldDescriptor

# Timestamp's valid range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
TIMESTAMP_MIN, TIMESTAMP_MAX = -62_135_596_800, 253_402_300_799
DURATION_MAX = 315_576_000_000  # about 10,000 years, Duration's documented bound
MOSTLY = st.sampled_from((True, True, False))
"""Whether to set a field: more often than not, so that fewer requests miss a required one."""
INT_RANGES: dict[int, tuple[int, int]] = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}
PLAIN_TEXT = (
    "Kettle",
    "kitchen",
    "a",
    "EUR",
    "DE",
    "Berlin",
    "KET-1",
    "https://hooks.example/collabnet",
    "reviews:write",
)
ODD_TEXT = ("", " ", "\x00", "a\x00b", "\n", "\u202e", "🫖", "null", "-1", "0", "../..", "' OR 1=1 --", "x" * 5000)


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    """Integers in ``[low, high]``, the extremes and the small ones more often than by chance."""
    edges = sorted(n for n in {low, high, 0, 1, -1, 2, 2**31 - 1, -(2**31), 2**32 - 1, 2**53} if low <= n <= high)
    return st.one_of(st.sampled_from(edges), st.integers(max(low, -10), min(high, 1000)), st.integers(low, high))


def texts(max_size: int = 40) -> st.SearchStrategy[str]:
    """Strings as a caller might send them: plain, empty, odd, non-ASCII, with control characters."""
    characters = st.characters(codec="utf-8")  # protobuf strings must be valid UTF-8: no lone surrogates
    return st.one_of(st.sampled_from(PLAIN_TEXT), st.sampled_from(ODD_TEXT), st.text(characters, max_size=max_size))


def altered(identifier: str) -> st.SearchStrategy[str]:
    """An existing id, slightly wrong: another case, cut short, padded, one character changed."""

    def change(position: int) -> str:
        index = position % len(identifier) if identifier else 0
        replacement = "0" if identifier[index : index + 1] != "0" else "1"
        return identifier[:index] + replacement + identifier[index + 1 :]

    return st.one_of(
        st.sampled_from(
            [
                identifier.upper(),
                identifier[:-1],
                identifier + "0",
                f" {identifier}",
                identifier + "\x00",
                identifier * 2,
            ]
        ),
        st.integers(0, max(len(identifier) - 1, 0)).map(change),
    )


def identifiers(known: Sequence[str]) -> st.SearchStrategy[str]:
    """Mostly ids of existing objects (as they are, or altered), otherwise any string."""
    if not known:
        return texts()
    real = st.sampled_from(list(known))
    return st.one_of(real, real, real.flatmap(altered), texts())


class MessageStrategies:
    """Builds ``st.SearchStrategy[Message]`` for any message descriptor.

    ``ids``: real ids of existing objects that a string field of a given name (``product_id``,
    ``lot_ids``) could name. ``depth``: how many levels of nested messages to fill; deeper ones are
    left unset.
    """

    def __init__(
        self, ids: Callable[[str], Sequence[str]] = lambda name: (), depth: int = 3, max_repeated: int = 4
    ) -> None:
        self.ids = ids
        self.depth = depth
        self.max_repeated = max_repeated

    def messages(self, descriptor: Descriptor, depth: int | None = None) -> st.SearchStrategy[Message]:
        depth = self.depth if depth is None else depth
        cls = GetMessageClass(descriptor)
        well_known = self._well_known(descriptor)
        if well_known is not None:
            return well_known
        if depth <= 0:
            return st.builds(cls)
        singles = [f for f in descriptor.fields if f.containing_oneof is None]
        setters = {f.name: self._setter(f, depth) for f in descriptor.fields}

        @st.composite
        def build(draw: Callable[..., Any]) -> Message:
            message = cls()
            for field in singles:
                if draw(MOSTLY):
                    setters[field.name](message, draw)
            for oneof in descriptor.oneofs:
                choice = draw(st.sampled_from([None, *oneof.fields]))
                if choice is not None:
                    setters[choice.name](message, draw)
            return message

        return build()

    # --- fields ---------------------------------------------------------------------------------

    def _setter(self, field: FieldDescriptor, depth: int) -> Callable[[Message, Callable[..., Any]], None]:
        """A function that sets ``field`` of a message to a drawn value."""
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            keys = self._scalar(field.message_type.fields_by_name["key"])
            value_field = field.message_type.fields_by_name["value"]
            entries = st.dictionaries(keys, self._value(value_field, depth - 1), max_size=self.max_repeated)

            def set_map(message: Message, draw: Callable[..., Any]) -> None:
                target = getattr(message, field.name)
                for key, value in draw(entries).items():
                    if value_field.message_type is not None:
                        target[key].CopyFrom(value)
                    else:
                        target[key] = value

            return set_map
        mask_type = field.message_type
        if mask_type is not None and mask_type.full_name == "google.protobuf.FieldMask":
            # Paths of the fields an update names, now and then something else.
            container = field.containing_type
            siblings = [f.message_type for f in container.fields if f.message_type is not None] if container else []
            names = sorted({f.name for m in siblings for f in m.fields} - {"seconds", "nanos", "paths"})
            path = st.one_of(st.sampled_from(names), texts(20)) if names else texts(20)
            masks = st.lists(path, max_size=3).map(lambda paths: GetMessageClass(mask_type)(paths=paths))

            def set_mask(message: Message, draw: Callable[..., Any]) -> None:
                getattr(message, field.name).CopyFrom(draw(masks))

            return set_mask
        value = self._value(field, depth - 1 if field.message_type is not None else depth)
        if field.is_repeated:
            values = st.lists(value, max_size=self.max_repeated)

            def set_repeated(message: Message, draw: Callable[..., Any]) -> None:
                getattr(message, field.name).extend(draw(values))

            return set_repeated
        if field.message_type is not None:

            def set_message(message: Message, draw: Callable[..., Any]) -> None:
                getattr(message, field.name).CopyFrom(draw(value))

            return set_message

        def set_scalar(message: Message, draw: Callable[..., Any]) -> None:
            setattr(message, field.name, draw(value))

        return set_scalar

    def _value(self, field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        if field.message_type is not None:
            return self.messages(field.message_type, depth)
        return self._scalar(field)

    def _scalar(self, field: FieldDescriptor) -> st.SearchStrategy[Any]:
        kind = field.type
        if kind in INT_RANGES:
            return _integers(*INT_RANGES[kind])
        if kind == F.TYPE_BOOL:
            return st.booleans()
        if kind == F.TYPE_DOUBLE:
            return st.floats()
        if kind == F.TYPE_FLOAT:
            return st.floats(width=32)
        if kind == F.TYPE_BYTES:
            return st.binary(max_size=64)
        if kind == F.TYPE_ENUM and field.enum_type is not None:
            defined = [v.number for v in field.enum_type.values]
            named = st.sampled_from([n for n in defined if n] or defined)
            # proto3 enums are open: a number nobody defined still travels.
            return st.one_of(named, named, st.integers(-3, max(defined) + 3), _integers(-(2**31), 2**31 - 1))
        if field.name.endswith(("_id", "_ids")) or field.name == "id":
            return identifiers(self.ids(field.name))
        return texts()

    def _well_known(self, descriptor: Descriptor) -> st.SearchStrategy[Message] | None:
        cls = GetMessageClass(descriptor)
        name = descriptor.full_name
        if name == "google.protobuf.Timestamp":
            valid = st.builds(cls, seconds=st.integers(TIMESTAMP_MIN, TIMESTAMP_MAX), nanos=st.integers(0, 999_999_999))
            invalid = st.builds(cls, seconds=_integers(-(2**63), 2**63 - 1), nanos=_integers(-(2**31), 2**31 - 1))
            return st.one_of(valid, valid, invalid)
        if name == "google.protobuf.Duration":
            valid = st.integers(-DURATION_MAX, DURATION_MAX).map(lambda s: cls(seconds=s))
            invalid = st.builds(cls, seconds=_integers(-(2**63), 2**63 - 1), nanos=_integers(-(2**31), 2**31 - 1))
            return st.one_of(valid, valid, invalid)
        if name == "google.protobuf.FieldMask":
            return st.lists(texts(20), max_size=3).map(lambda paths: cls(paths=paths))
        return None
