"""Declared state: the attributes an object checkpoints, saved and restored generically.

A class lists the attributes that make up its state in ``state_fields``; the fields of all
classes of its MRO are saved together, so a subclass adds to its base's state and cannot
drop it by forgetting to. Only explicitly: a class may list in ``derived_fields`` base
fields that it recomputes from the state it saves (e.g. an alias of a nested object's).
What is neither state nor fixed at construction is listed in ``scratch_fields``: caches
and per-round values that are always recomputed before they are read (not saved; a test
checks that every other attribute of a resumed strategy equals the running one's).

:func:`encode` turns a value into nested dicts/lists of JSON values and NumPy arrays
(what a checkpoint stores: arrays in an .npz, the rest as JSON, never pickle), and
:func:`decode` turns it back, restoring into the current value where identity matters (a
random generator keeps its object, a nested stateful object loads its own state).

Encoded forms (tags are single-key dicts, never produced by plain data):
- NumPy arrays stay arrays; None, bool, int, float, str stay as they are;
- ``numpy.random.Generator`` -> ``{"__rng__": bit generator state}``;
- a set -> ``{"__set__": sorted list}``; a tuple -> ``{"__tuple__": list}``;
- a dict with keys other than strings -> ``{"__items__": [[key, value], ...]}``;
- an object with declared state -> ``{"__state__": its state dict}``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_TAGS = ("__rng__", "__set__", "__tuple__", "__items__", "__state__")


def declared_fields(cls: type) -> tuple[str, ...]:
    """Every ``state_fields`` entry of ``cls`` and its bases, base classes first, less the
    ``derived_fields`` any of them lists."""
    out: list[str] = []
    derived: set[str] = set()
    for klass in reversed(cls.__mro__):
        derived.update(vars(klass).get("derived_fields", ()))
        for name in vars(klass).get("state_fields", ()):
            if name not in out:
                out.append(name)
    return tuple(n for n in out if n not in derived)


def scratch_fields(cls: type) -> tuple[str, ...]:
    """Every ``scratch_fields`` entry of ``cls`` and its bases (not saved, by design)."""
    return tuple(dict.fromkeys(n for klass in reversed(cls.__mro__)
                               for n in vars(klass).get("scratch_fields", ())))


def has_declared_state(obj: Any) -> bool:
    return not isinstance(obj, type) and bool(declared_fields(type(obj)))


def state_of(obj: Any) -> dict[str, Any]:
    """The encoded declared state of ``obj``."""
    return {name: encode(getattr(obj, name)) for name in declared_fields(type(obj))}


def load_state(obj: Any, state: dict[str, Any]) -> None:
    """Put ``state`` (from :func:`state_of`) back into ``obj``; then ``obj.after_load()``."""
    names = declared_fields(type(obj))
    missing = [n for n in names if n not in state]
    if missing:
        raise ValueError(f"{type(obj).__name__}: the saved state lacks {missing}")
    for name in names:
        setattr(obj, name, decode(state[name], getattr(obj, name, None)))
    after = getattr(obj, "after_load", None)
    if callable(after):
        after()


def encode(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str | np.ndarray):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.random.Generator):
        return {"__rng__": value.bit_generator.state}
    if isinstance(value, set | frozenset):
        return {"__set__": sorted(encode(v) for v in value)}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and not (len(value) == 1
                                                           and next(iter(value)) in _TAGS):
            return {k: encode(v) for k, v in value.items()}
        return {"__items__": [[encode(k), encode(v)] for k, v in value.items()]}
    if has_declared_state(value):
        return {"__state__": state_of(value)}
    raise TypeError(f"cannot checkpoint a {type(value).__name__}: declare JSON values, "
                    "NumPy arrays, generators, sets, tuples, lists, dicts or objects with "
                    "state_fields")


def decode(value: Any, current: Any = None) -> Any:
    """Inverse of :func:`encode`; ``current`` is the attribute's present value."""
    if isinstance(value, list):
        if isinstance(current, list) and len(current) == len(value):
            return [decode(v, c) for v, c in zip(value, current, strict=True)]
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1 and next(iter(value)) in _TAGS:
        tag, inner = next(iter(value.items()))
        if tag == "__rng__":
            rng = current if isinstance(current, np.random.Generator) else (
                np.random.default_rng())
            rng.bit_generator.state = inner
            return rng
        if tag == "__set__":
            return {decode(v) for v in inner}
        if tag == "__tuple__":
            return tuple(decode(v) for v in inner)
        if tag == "__items__":
            return {_key(decode(k)): decode(v) for k, v in inner}
        if current is None or not has_declared_state(current):
            raise ValueError("saved state of an object, but there is no object to load it into")
        load_state(current, inner)
        return current
    old = current if isinstance(current, dict) else {}
    return {k: decode(v, old.get(k)) for k, v in value.items()}


def _key(k: Any) -> Any:
    return tuple(k) if isinstance(k, list) else k


__all__ = ["declared_fields", "decode", "encode", "load_state", "scratch_fields", "state_of"]
