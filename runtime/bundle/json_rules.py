"""Reading JSON from files strangers wrote (bundle manifests, centroid sidecars) without trusting it.

``load_bounded_json`` refuses text over a size limit before parsing it, NaN and Infinity anywhere,
integers too long to be numbers anyone meant, and nesting deep enough to exhaust the stack.
The rules below then say, one per field, what a value must be: an integer in a range (``True`` is
not ``1``), a string of bounded length, one of a few choices, or a JSON object of bounded depth and
size. A table of rules per field makes the schema a declaration, so adding a field is one line.
Each failure is a ``ValueError`` whose message names the field; callers prefix their file's name.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 32  # nesting of objects and lists inside a free-form object
MAX_NODES = 100_000  # values (scalars, lists, objects) inside a free-form object
MAX_TEXT = 4096  # characters in a string field
MAX_INT_DIGITS = 40  # a JSON integer literal longer than this is refused before Python converts it


class JsonRuleError(ValueError):
    """A value that breaks its rule; the message names the field, callers add the file."""


def _reject_constant(name: str) -> Any:
    raise JsonRuleError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonRuleError(f"the number {text[:20]} is out of range")
    return value


def _bounded_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS:
        raise JsonRuleError(f"an integer of {len(text)} digits is out of range")
    return int(text)


def load_bounded_json(data: bytes | str, *, max_bytes: int) -> Any:
    """Parse ``data`` (UTF-8 bytes or text) of at most ``max_bytes``; any problem is a JsonRuleError."""
    size = len(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    if size > max_bytes:
        raise JsonRuleError(f"it is {size} bytes, more than the {max_bytes} allowed")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonRuleError(f"it is not UTF-8 text (byte {exc.start})") from None
    try:
        return json.loads(data, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_bounded_int)
    except JsonRuleError:
        raise
    except json.JSONDecodeError as exc:
        raise JsonRuleError(f"it is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise JsonRuleError("it is nested too deeply to be read") from None
    except ValueError as exc:  # e.g. Python's limit on integer string conversion
        raise JsonRuleError(f"it is not valid JSON ({str(exc)[:80]})") from None


def shown(value: Any) -> str:
    """A short rendering of a bad value for an error message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class Integer:
    low: int
    high: int

    def check(self, name: str, value: Any) -> None:
        if type(value) is not int or not self.low <= value <= self.high:  # bool is an int subclass: refused
            raise JsonRuleError(f"'{name}' must be an integer in {self.low}..{self.high}, got {shown(value)}")


@dataclass(frozen=True)
class Number:
    low: float
    high: float

    def check(self, name: str, value: Any) -> None:
        if type(value) not in (int, float) or not self.low <= value <= self.high:
            raise JsonRuleError(f"'{name}' must be a number in {self.low:g}..{self.high:g}, got {shown(value)}")


@dataclass(frozen=True)
class Text:
    max_length: int = MAX_TEXT
    optional: bool = False  # null allowed
    hex_length: int = 0  # when set: exactly this many lowercase hex digits

    def check(self, name: str, value: Any) -> None:
        if value is None and self.optional:
            return
        kind = "a string or null" if self.optional else "a string"
        if not isinstance(value, str) or len(value) > self.max_length:
            raise JsonRuleError(f"'{name}' must be {kind} of at most {self.max_length} characters, got {shown(value)}")
        if self.hex_length and (len(value) != self.hex_length or value.strip("0123456789abcdef")):
            raise JsonRuleError(f"'{name}' must be {self.hex_length} lowercase hex digits, got {shown(value)}")


@dataclass(frozen=True)
class Choice:
    choices: tuple[str, ...]

    def check(self, name: str, value: Any) -> None:
        if not isinstance(value, str) or value not in self.choices:
            raise JsonRuleError(f"'{name}' must be one of {', '.join(self.choices)}, got {shown(value)}")


@dataclass(frozen=True)
class ChoiceOrInteger:
    """One of ``choices`` or an integer in ``low..high`` (a channel: ``"mean"`` or an index)."""

    choices: tuple[str, ...]
    low: int
    high: int

    def check(self, name: str, value: Any) -> None:
        if (isinstance(value, str) and value in self.choices) or (type(value) is int and self.low <= value <= self.high):
            return
        raise JsonRuleError(f"'{name}' must be one of {', '.join(self.choices)} or an integer in "
                            f"{self.low}..{self.high}, got {shown(value)}")


@dataclass(frozen=True)
class Nullable:
    """``rule``, or JSON null (a value a writer records as "not set")."""

    rule: Rule

    def check(self, name: str, value: Any) -> None:
        if value is not None:
            self.rule.check(name, value)


@dataclass(frozen=True)
class Flag:
    def check(self, name: str, value: Any) -> None:
        if type(value) is not bool:
            raise JsonRuleError(f"'{name}' must be true or false, got {shown(value)}")


@dataclass(frozen=True)
class TextList:
    max_items: int = 100_000
    max_length: int = MAX_TEXT

    def check(self, name: str, value: Any) -> None:
        if (not isinstance(value, list) or len(value) > self.max_items
                or not all(isinstance(v, str) and len(v) <= self.max_length and "\0" not in v for v in value)):
            raise JsonRuleError(f"'{name}' must be a list of strings (paths), got {shown(value)}")


@dataclass(frozen=True)
class JsonObject:
    """A free-form JSON object (its keys are for other parts of audiotok), bounded in depth and size."""

    optional: bool = False  # null allowed
    max_depth: int = MAX_DEPTH
    max_nodes: int = MAX_NODES

    def check(self, name: str, value: Any) -> None:
        if value is None and self.optional:
            return
        if not isinstance(value, dict):
            kind = "a JSON object or null" if self.optional else "a JSON object"
            raise JsonRuleError(f"'{name}' must be {kind}, got {shown(value)}")
        check_bounds(name, value, self.max_depth, self.max_nodes)


@dataclass(frozen=True)
class AnyJson:
    """Any JSON value, bounded like :class:`JsonObject`: the rule for a field nobody described yet."""

    def check(self, name: str, value: Any) -> None:
        check_bounds(name, value, MAX_DEPTH, MAX_NODES)


def check_bounds(name: str, value: Any, max_depth: int, max_nodes: int) -> None:
    nodes, stack = 0, [(value, 1)]
    while stack:  # iterative: a deep value must not exhaust the stack here either
        node, depth = stack.pop()
        nodes += 1
        if depth > max_depth or nodes > max_nodes:
            raise JsonRuleError(f"'{name}' is nested deeper than {max_depth} levels or holds more than "
                                f"{max_nodes} values")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)

Rule = Integer | Number | Text | Choice | ChoiceOrInteger | Flag | TextList | JsonObject | AnyJson | Nullable
