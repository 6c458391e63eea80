"""A loud name -> object registry: duplicates fail, unknown names list the known ones."""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
  """Maps names to objects (builders, specs) for one kind of thing.

  Args:
    kind: what is registered, used in error messages ("backbone", "head").
  """

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: dict[str, T] = {}

  def add(self, name: str, entry: T) -> T:
    """Registers `entry` under `name`; raises if the name is taken."""
    if name in self._entries:
      raise ValueError(f"{self.kind} {name!r} is already registered")
    self._entries[name] = entry
    return entry

  def register(self, name: str) -> Callable[[T], T]:
    """Decorator form of `add`."""
    return lambda entry: self.add(name, entry)

  def get(self, name: str) -> T:
    """Returns the entry for `name`; raises KeyError listing known names."""
    try:
      return self._entries[name]
    except KeyError:
      raise KeyError(
          f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._entries))}"
      ) from None

  def names(self) -> list[str]:
    return sorted(self._entries)

  def __contains__(self, name: str) -> bool:
    return name in self._entries

  def __iter__(self) -> Iterator[str]:
    return iter(self.names())
