"""Every problem of a value against a msgspec type, each at its path, in the reader's words.

msgspec stops at the first error of a ``convert``, and says it in its own terms. The
config file (TOML) and the API's bodies (JSON) want every problem named, in theirs:
a value that fails is checked again, field by field and element by element, until
each problem is found, and each is described in the vocabulary of its format.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Struct

from pagerd.core.policy import PATTERN_MEANINGS, DomainError

# msgspec's regexes as it prints them (their repr), and what each means for people.
_MEANINGS = {repr(f"^{p}$"): meaning for p, meaning in PATTERN_MEANINGS.items()}
_MEANINGS[repr(r"\S")] = "must not be blank"


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """How a format names things: its type names, what a struct's member is called, and
    whether a problem quotes the value it refuses."""

    types: Mapping[str, str]
    member: str  # "key" (TOML) or "field" (JSON)
    quotes_value: bool
    has_null: bool  # TOML has no null: an optional value is just absent
    root: str  # what a problem of the whole value is said to be at


TOML = Vocabulary(
    types={"object": "table", "str": "string", "int": "integer", "bool": "boolean"},
    member="key",
    quotes_value=True,
    has_null=False,
    root="file",
)
JSON = Vocabulary(
    types={"str": "string", "int": "integer", "float": "number", "bool": "boolean"},
    member="field",
    quotes_value=False,
    has_null=True,
    root="body",
)


@dataclass(frozen=True, slots=True)
class Problem:
    """What is wrong (``problem``) and where (``field``, a path such as ``levels[0].targets``)."""

    field: str
    problem: str


def explain(
    value: object, tp: Any, vocabulary: Vocabulary, *, path: str = "", limit: int | None = None
) -> list[Problem]:
    """Every problem of ``value`` as ``tp`` (at most ``limit``); empty if it converts."""
    found: list[Problem] = []
    for problem in _Explainer(vocabulary).problems(value, tp, path):
        found.append(problem if problem.field else Problem(vocabulary.root, problem.problem))
        if limit is not None and len(found) >= limit:
            break
    return found


def join(path: str, key: object) -> str:
    """``path.key``, or ``key`` at the top."""
    return f"{path}.{key}" if path else str(key)


@dataclass(frozen=True, slots=True)
class _Explainer:
    words: Vocabulary

    def problems(self, value: object, tp: Any, path: str) -> Iterator[Problem]:
        try:
            msgspec.convert(value, tp)
        except msgspec.ValidationError as error:
            found = error
        else:
            return
        base, shallow = _unwrap(tp)
        if shallow is not None:
            # The constraint on this node itself (an array's length) first: 10,000
            # developers are one problem, not 10,000.
            try:
                msgspec.convert(value, shallow)
            except msgspec.ValidationError as error:
                yield self.describe(error, value, base, path)
                return
        descended = False
        for problem in self._descend(value, base, path):
            descended = True
            yield problem
        if not descended:
            yield self.describe(found, value, base, path)

    def _descend(self, value: object, tp: Any, path: str) -> Iterator[Problem]:
        origin = typing.get_origin(tp)
        if _is_struct(tp) and isinstance(value, dict):
            yield from self._struct(value, tp, path)
        elif origin in (list, tuple) and isinstance(value, list):
            (item_type, *_) = typing.get_args(tp)
            for index, item in enumerate(value):
                yield from self.problems(item, item_type, f"{path}[{index}]")
        elif origin in (typing.Union, types.UnionType):
            members = [m for m in typing.get_args(tp) if m is not type(None)]
            if value is None:
                return
            if len(members) == 1:
                yield from self.problems(value, members[0], path)
            elif all(_is_struct(m) for m in members) and isinstance(value, dict):
                yield from self._tagged(value, members, path)

    def _struct(self, value: dict[Any, Any], tp: type[Struct], path: str) -> Iterator[Problem]:
        config = tp.__struct_config__
        fields = {f.encode_name: f for f in msgspec.structs.fields(tp)}
        if config.forbid_unknown_fields:
            for key in value:
                if key not in fields and key != config.tag_field:
                    yield Problem(join(path, key), f"unknown {self.words.member}")
        for key, info in fields.items():
            if key in value:
                yield from self.problems(value[key], info.type, join(path, key))
            elif info.required:
                yield Problem(join(path, key), "is required")

    def _tagged(self, value: dict[Any, Any], members: list[Any], path: str) -> Iterator[Problem]:
        by_tag = {m.__struct_config__.tag: m for m in members}
        tag_field = members[0].__struct_config__.tag_field
        tag = value.get(tag_field)
        chosen = by_tag.get(tag) if isinstance(tag, str) else None
        if chosen is not None:
            yield from self.problems(value, chosen, path)
            return
        where = join(path, tag_field)
        if tag is None:
            yield Problem(where, f"is required, one of {', '.join(by_tag)}")
        else:
            yield Problem(where, f"must be one of {', '.join(by_tag)}{self._got(tag)}")

    def describe(
        self, error: msgspec.ValidationError, value: object, tp: Any, path: str
    ) -> Problem:
        """Say what msgspec's error means, in the format's words, at the path it names."""
        found = re.fullmatch(r"(?s)(.*?)(?: - at `\$(.*)`)?", str(error))
        assert found is not None  # the pattern matches any string
        message, subpath = found.group(1), found.group(2) or ""
        where = path + subpath
        got = self._got(_lookup(value, subpath))
        cause = error.__cause__
        if isinstance(cause, DomainError):  # a struct's own check (__post_init__)
            return Problem(join(where, cause.field), cause.problem)
        if m := re.fullmatch(r"Object contains unknown field `(.*)`", message):
            return Problem(join(where, m.group(1)), f"unknown {self.words.member}")
        if m := re.fullmatch(r"Object missing required field `(.*)`", message):
            return Problem(join(where, m.group(1)), "is required")
        if m := re.fullmatch(r"Expected `(.*)`, got `(.*)`", message):
            return Problem(
                where, f"expected {self._type(m.group(1))}, got {self._type(m.group(2))}"
            )
        if m := re.fullmatch(r"Expected `\w+` (>=|>|<=|<) (\S+)", message):
            limit = float(m.group(2))
            # A float field's bound prints as 0.0; people wrote 0.
            shown = str(int(limit)) if limit.is_integer() else m.group(2)
            bound = "positive" if m.group(1) == ">" and limit == 0 else f"{m.group(1)} {shown}"
            return Problem(where, f"must be {bound}{got}")
        if m := re.fullmatch(r"Expected `str` of length (>=|<=) (\d+)", message):
            if m.group(1) == ">=" and m.group(2) == "1":
                return Problem(where, "must not be empty")
            bound = "at least" if m.group(1) == ">=" else "at most"
            return Problem(where, f"must be {bound} {m.group(2)} characters")
        if m := re.fullmatch(r"Expected `(?:array|object)` of length (>=|<=) (\d+)", message):
            bound = "at least" if m.group(1) == ">=" else "at most"
            return Problem(where, f"must have {bound} {m.group(2)} items")
        if m := re.fullmatch(r"Expected `str` matching regex (.*)", message):
            meaning = _MEANINGS.get(m.group(1), f"must match {m.group(1)}")
            return Problem(where, f"{meaning}{got}")
        if re.fullmatch(r"Invalid enum value (.*)", message) and typing.get_origin(tp) is Literal:
            return Problem(where, f"must be one of {', '.join(typing.get_args(tp))}{got}")
        return Problem(where, message)

    def _type(self, msgspec_names: str) -> str:
        # "float | null" is msgspec's name for an optional float.
        names = [n for n in msgspec_names.split(" | ") if n != "null" or self.words.has_null]
        return " or ".join(self.words.types.get(n, n) for n in names)

    def _got(self, value: object) -> str:
        return f", got {value!r}" if self.words.quotes_value and value is not None else ""


def _unwrap(tp: Any) -> tuple[Any, Any]:
    """The type under ``Annotated``, and the node's own constraints on a shallow type."""
    if typing.get_origin(tp) is not Annotated:
        return tp, None
    base, *metas = typing.get_args(tp)
    if _is_struct(base):
        return base, None
    shallow_base = {list: list[Any], tuple: tuple[Any, ...]}.get(typing.get_origin(base), base)
    return base, Annotated[(shallow_base, *metas)]


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Struct)


def _lookup(value: object, subpath: str) -> object:
    """The value at msgspec's path (``.levels[0].type``) below ``value``."""
    for key, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", subpath):
        if key and isinstance(value, dict):
            value = value.get(key)
        elif index and isinstance(value, list) and int(index) < len(value):
            value = value[int(index)]
        else:
            return None
    return value
