"""Result records: the dataclasses that flow from measurement to report, and their JSON.

Every record is a dataclass deriving from `Record`; `to_json` turns a record (or any nesting
of records, dicts, lists and tuples) into the plain value the harness writes. Fields are
written in declaration order; a field declared with `optional()` is left out while it is
None (the JSON then has no such key, as when it was a dict built key by key). The report
(`report.py`) reads that JSON, whether just produced or loaded from a file."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

JsonDict = dict[str, Any]  # a JSON object as json.load returns it


def optional() -> Any:  # dataclasses.field's own type
    """A field that defaults to None and is left out of the JSON while None."""
    return dataclasses.field(default=None, metadata={"omit_if_none": True})


class Record:
    """Base of the result dataclasses (subclasses are @dataclass)."""

    def to_json(self) -> JsonDict:
        out: JsonDict = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None and f.metadata.get("omit_if_none"):
                continue
            out[f.name] = to_json(value)
        return out


def to_json(value: Any) -> Any:  # any JSON value
    """Records, dicts, lists and tuples, recursively, as plain JSON values."""
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


@dataclass
class Unavailable(Record):
    """A measurement that did not happen: `{"not_supported": why}` (the running bulwark
    lacks a feature; reported, not a failure) or `{"error": repr}` (the harness failed)."""

    kind: Literal["not_supported", "error"]
    detail: str

    @classmethod
    def not_supported(cls, e: Exception) -> Unavailable:
        return cls("not_supported", str(e))

    @classmethod
    def error(cls, e: Exception) -> Unavailable:
        return cls("error", repr(e))

    @property
    def is_not_supported(self) -> bool:
        return self.kind == "not_supported"

    def to_json(self) -> JsonDict:
        return {self.kind: self.detail}
