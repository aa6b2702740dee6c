"""Values worked out once per immutable object (a kernel, a policy), found by identity."""

from __future__ import annotations


class IdentityCache:
    """Values worked out from immutable objects, looked up by identity.

    Each entry holds its object, so the object's id cannot be reused while the entry lives;
    a kernel's leaves are read-only arrays (see ``kernels.positive``) and a policy is frozen,
    so an entry never goes stale. Nothing is stored on the (frozen) object itself. Bounded:
    the oldest entry goes first.
    """

    def __init__(self, size: int = 256):
        self._entries: dict[int, tuple] = {}
        self._size = size

    def peek(self, obj):
        """The value kept for ``obj``, or None: nothing is worked out."""
        hit = self._entries.get(id(obj))
        return hit[1] if hit is not None and hit[0] is obj else None

    def get(self, obj, compute, *, keep=lambda value: True):
        """``compute(obj)``, worked out once per object; not kept where ``keep`` says no."""
        hit = self._entries.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        value = compute(obj)
        if keep(value):
            if len(self._entries) >= self._size:
                self._entries.pop(next(iter(self._entries)))
            self._entries[id(obj)] = (obj, value)
        return value


__all__ = ["IdentityCache"]
