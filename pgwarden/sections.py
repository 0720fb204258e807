"""What of pgwarden's own configuration a plugin is given: the sections it declared it needs.

A plugin gets its own options (``plugins.<name>``, `pgwarden_options`) and,
when it declares them with ``pgwarden_config_sections``, parts of the rest of
the file: the built-in ``jwt`` plugin needs ``auth.jwt``, ``recording`` needs
``recording``; an approval store in PostgreSQL would need ``upstream``. Never
the whole config: what a plugin reads is what it said it reads, so a change
elsewhere in the file is none of its business.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar, cast

import attrs

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@attrs.frozen(eq=False)
class ConfigSection(Generic[T_co]):
    """A part of pgwarden's configuration a plugin needs: its key path and its class.

    ``ConfigSection("auth.jwt", JwtAuth)``. pgwarden checks at load that the path
    exists and holds that class (or None, for an optional section).

    .. versionadded:: 1.0
    """

    #: the dotted key path in the file: ``upstream``, ``auth.jwt``, ``recording``
    path: str
    #: the class of what is there (exported by `pgwarden.api`)
    type: type[T_co]

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.path.split("."))


@attrs.frozen
class Sections(Mapping["ConfigSection[object]", object]):
    """The sections one plugin declared, from the configuration being applied.

    ``sections[AUTH_JWT]`` is typed by its key: a `JwtAuth` (or None where the file
    leaves an optional section out).

    .. versionadded:: 1.0
    """

    _values: Mapping[ConfigSection[object], object] = attrs.field(factory=dict)

    def __getitem__(self, key: ConfigSection[T]) -> T:
        try:
            return cast(T, self._values[key])
        except KeyError:
            raise KeyError(f"section {key.path!r} was not declared by this plugin's pgwarden_config_sections") \
                from None

    def __iter__(self) -> Iterator[ConfigSection[object]]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


@attrs.frozen(auto_exc=True)
class ConfigProblem(Exception):
    """Something wrong with the configuration, at a key path: reported as ``line N: path: message``.

    Returned by ``pgwarden_validate``, or raised by ``pgwarden_configure`` when what
    only applying shows (a file that cannot be opened) refuses the config.

    .. versionadded:: 1.0
    """

    #: the key path, as in the file: ``("recording", "sinks", 0, "file")``
    path: tuple[str | int, ...]
    message: str

    def __str__(self) -> str:
        return f"{'.'.join(map(str, self.path))}: {self.message}"


@functools.cache
def _hints(cls: type) -> dict[str, object]:
    """A config class's fields' types: evaluated once a class (each plugin host resolves every
    plugin's sections; evaluating the hints' text took ~5 ms of each test's pgwarden start)."""
    return typing.get_type_hints(cls)


def resolve(root: type, section: ConfigSection[object]) -> str | None:
    """Why ``section`` does not name a part of ``root`` (a config class) holding its type; None if it does."""
    cls: object = root
    for i, key in enumerate(section.parts):
        hints = _hints(cls) if isinstance(cls, type) and attrs.has(cls) else {}
        if key not in hints or key.startswith("_") \
                or attrs.fields_dict(cls)[key].metadata.get("internal"):  # type: ignore[arg-type]  # an attrs class
            where = ".".join(section.parts[:i]) or "the top level"
            return f"no section {section.path!r}: {where} has no key {key!r}"
        cls = hints[key]
    wanted = section.type
    held = [t for t in typing.get_args(cls) if t is not type(None)] if typing.get_args(cls) else [cls]
    if wanted not in held:
        return f"section {section.path!r} holds {cls}, not {getattr(wanted, '__name__', wanted)}"
    return None


def value_at(config: object, section: ConfigSection[object]) -> object:
    value = config
    for key in section.parts:
        value = getattr(value, key)
    return value
