"""JAX's persistent compilation cache, on by default for kernelgrad's users.

A new process pays 25-100 ms of XLA compilation per program and size bucket. JAX can keep
compiled programs on disk and reload them, but only when a cache folder is configured, and
by default it only stores programs that took over a second to compile, which none of
kernelgrad's do. :func:`enable_default` (run when kernelgrad is imported) therefore

* does nothing if ``KERNELGRAD_NO_COMPILE_CACHE`` is set to anything but ``""``/``"0"``;
* does nothing if the user configured a cache already (``jax_compilation_cache_dir`` set by
  ``jax.config.update``, by ``JAX_COMPILATION_CACHE_DIR``, or by
  ``jax.experimental.compilation_cache.compilation_cache.set_cache_dir``): theirs wins, with
  their thresholds;
* otherwise points JAX at ``$XDG_CACHE_HOME/kernelgrad/jax`` (``~/.cache/kernelgrad/jax``)
  and lowers the minimum compile time worth storing to :data:`MIN_COMPILE_SECONDS`.

JAX's cache is process-wide: once it is on, other jitted programs in the same process are
stored there too. Turn it off with ``KERNELGRAD_NO_COMPILE_CACHE=1`` (before importing
kernelgrad) or at run time with :func:`disable`. As JAX warns, a compilation cache is
trusted code: never point it at a folder that other users can write.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache

#: Environment variable that turns kernelgrad's default cache off.
ENV_DISABLE = "KERNELGRAD_NO_COMPILE_CACHE"

#: Programs that compiled faster than this are not worth a disk read and are not stored.
MIN_COMPILE_SECONDS = 0.02

_OWNED: str | None = None  # the folder kernelgrad configured, if it configured one
_PREVIOUS_MIN_SECONDS: float | None = None  # the threshold kernelgrad replaced


def default_folder() -> Path:
    """``$XDG_CACHE_HOME/kernelgrad/jax``, or ``~/.cache/kernelgrad/jax``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kernelgrad" / "jax"


def disabled_by_env() -> bool:
    """Whether ``KERNELGRAD_NO_COMPILE_CACHE`` asks for no default cache."""
    return os.environ.get(ENV_DISABLE, "").strip().lower() not in ("", "0", "false", "no")


def user_configured() -> bool:
    """Whether a compilation cache folder was configured by someone other than kernelgrad."""
    current = jax.config.jax_compilation_cache_dir
    return bool(current) and current != _OWNED


def active_folder() -> str | None:
    """The folder JAX's persistent cache writes to now, or None when it is off."""
    return jax.config.jax_compilation_cache_dir or None


def enable_default(folder: str | os.PathLike | None = None) -> str | None:
    """Turn on the persistent cache in ``folder`` (default :func:`default_folder`).

    Returns the folder in use, or None when the environment disabled it, the user configured
    their own cache (left untouched), or the folder cannot be created (a read-only home
    directory must not break importing kernelgrad).
    """
    global _OWNED, _PREVIOUS_MIN_SECONDS
    if disabled_by_env() or user_configured():
        return None
    path = Path(folder) if folder is not None else default_folder()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(path, os.W_OK):
        return None
    if _PREVIOUS_MIN_SECONDS is None:
        _PREVIOUS_MIN_SECONDS = jax.config.jax_persistent_cache_min_compile_time_secs
    _OWNED = str(path)
    jax.config.update("jax_compilation_cache_dir", _OWNED)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return _OWNED


def disable() -> None:
    """Turn off the cache that kernelgrad turned on; a user's own configuration is kept."""
    global _OWNED, _PREVIOUS_MIN_SECONDS
    if _OWNED is None or user_configured():
        return
    jax.config.update("jax_compilation_cache_dir", None)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", _PREVIOUS_MIN_SECONDS)
    # JAX opens the cache once, at the first compile; forget it so the change takes effect.
    compilation_cache.reset_cache()
    _OWNED = _PREVIOUS_MIN_SECONDS = None


__all__ = [
    "ENV_DISABLE",
    "MIN_COMPILE_SECONDS",
    "active_folder",
    "default_folder",
    "disable",
    "disabled_by_env",
    "enable_default",
    "user_configured",
]
