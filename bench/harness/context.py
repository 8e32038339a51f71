"""What every measurement gets: the process registry, the temporary directory, the bulwark
binary, the run's parameters, and the list of errors the harness hit."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .procs import Procs

Log = Callable[[str], None]


@dataclass
class Ctx:
    procs: Procs
    tmp: str
    bulwark: str
    params: dict[str, int] = field(default_factory=dict)
    quick: bool = False
    errors: list[str] = field(default_factory=list)
