"""JAX's persistent compilation cache, on by default for kernelgrad's own programs.

A new process pays 25-100 ms of XLA compilation per program and size bucket. JAX can keep
compiled programs on disk and reload them, but only when a cache folder is configured, and
by default it only stores programs that took over a second to compile, which none of
kernelgrad's do. So kernelgrad compiles its programs through :func:`jit`, which runs them
inside :func:`scope`: JAX's cache settings (folder, and a minimum compile time of
:data:`MIN_COMPILE_SECONDS`) are set for that call only, through JAX's own context-local
configuration. The user's global JAX configuration is never changed, and their own
programs are not stored in kernelgrad's folder.

* The folder is ``$XDG_CACHE_HOME/kernelgrad/jax`` (``~/.cache/kernelgrad/jax``).
* ``KERNELGRAD_NO_COMPILE_CACHE=1`` (any value but ``""``/``"0"``/``"false"``/``"no"``)
  turns it off at import; :func:`disable` turns it off at run time.
* A cache the user configured (``jax.config.update("jax_compilation_cache_dir", ...)`` or
  ``JAX_COMPILATION_CACHE_DIR``) wins: kernelgrad's programs then go there, with the user's
  thresholds.

As JAX warns, a compilation cache is trusted code: never point it at a folder that other
users can write.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

import jax

from . import policy, xla_options
from .identity import IdentityCache


def _context_settings():
    """JAX's context-local cache settings (context managers), or None where this JAX has none.

    JAX exposes no public context-local form of them (``jax.config.update`` changes them for
    the whole process), so they come from its private config module, guarded: a JAX that
    moves them leaves kernelgrad working, with its persistent cache off (tested).
    """
    try:
        from jax._src import config
    except ImportError:
        return None
    names = ("compilation_cache_dir", "persistent_cache_min_compile_time_secs")
    if not all(callable(getattr(config, name, None)) for name in names):
        return None
    return tuple(getattr(config, name) for name in names)


_SETTINGS = _context_settings()

#: Environment variable that turns kernelgrad's default cache off.
ENV_DISABLE = "KERNELGRAD_NO_COMPILE_CACHE"

#: Programs that compiled faster than this are not worth a disk read and are not stored.
MIN_COMPILE_SECONDS = 0.02

_FOLDER: str | None = None  # kernelgrad's own folder, while its cache is on


def default_folder() -> Path:
    """``$XDG_CACHE_HOME/kernelgrad/jax``, or ``~/.cache/kernelgrad/jax``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kernelgrad" / "jax"


def disabled_by_env() -> bool:
    """Whether ``KERNELGRAD_NO_COMPILE_CACHE`` asks for no default cache."""
    return os.environ.get(ENV_DISABLE, "").strip().lower() not in ("", "0", "false", "no")


def user_configured() -> bool:
    """Whether the user configured a compilation cache folder of their own."""
    return bool(jax.config.jax_compilation_cache_dir)


def active_folder() -> str | None:
    """The folder kernelgrad's programs are cached in now, or None when caching is off."""
    return jax.config.jax_compilation_cache_dir or _FOLDER


def enable_default(folder: str | os.PathLike | None = None) -> str | None:
    """Cache kernelgrad's programs in ``folder`` (default :func:`default_folder`).

    Returns the folder in use, or None when this JAX has no context-local cache settings,
    the environment disabled it, the user configured their own cache (which then serves
    kernelgrad too), or the folder cannot be created (a
    read-only home directory must not break importing kernelgrad).
    """
    global _FOLDER
    if _SETTINGS is None or disabled_by_env() or user_configured():
        return None
    path = Path(folder) if folder is not None else default_folder()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(path, os.W_OK):
        return None
    _FOLDER = str(path)
    return _FOLDER


def disable() -> None:
    """Stop caching kernelgrad's programs (a user's own cache configuration is untouched)."""
    global _FOLDER
    _FOLDER = None


def scope():
    """A context in which JAX compiles into kernelgrad's cache, if it is on."""
    if _FOLDER is None or user_configured():
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    folder, min_seconds = _SETTINGS
    stack.enter_context(folder(_FOLDER))
    stack.enter_context(min_seconds(MIN_COMPILE_SECONDS))
    return stack


def jit(fun=None, **options):
    """``jax.jit`` for kernelgrad's own programs; a decorator.

    Calls compile (or load) inside :func:`scope`, are traced anew under each
    :mod:`kernelgrad.execution.policy`, and trace with NumPy-style rank promotion allowed: the rules
    broadcast (n, d) against (d,) on purpose, and a user's strict
    ``jax_numpy_rank_promotion`` is about their code, not ours. A call with a static
    ``method`` compiles with that method's options (:func:`.xla_options.for_method`).
    """
    if fun is None:
        return functools.partial(jit, **options)
    # One traced function per policy: a program traced under one policy's blocks or
    # thresholds is never reused under another's. JAX keys its trace cache on the function
    # object, so each policy gets a wrapper of its own (and one per set of compiler
    # options). Looked up by identity, which costs far less than hashing on every call.
    per_policy = IdentityCache()

    def jit_under(chosen):
        @functools.wraps(fun)
        def under_this_policy(*args, **kwargs):
            return fun(*args, **kwargs)

        plain = jax.jit(under_this_policy, **options)
        tuned = jax.jit(under_this_policy, **options, compiler_options=xla_options.NO_YNN)
        return plain, tuned

    def jitted_for(chosen, args, kwargs):
        plain, tuned = per_policy.get(chosen, jit_under)
        if xla_options.for_method(kwargs.get("method")) is None:
            return plain
        # Options belong to a top-level program: inside a caller's trace, theirs compiles.
        traced = any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves(args))
        return plain if traced else tuned

    @functools.wraps(fun)
    def call(*args, **kwargs):
        with scope(), jax.numpy_rank_promotion("allow"):
            jitted = jitted_for(policy.current(), args, kwargs)
            try:
                return jitted(*args, **kwargs)
            except ValueError as err:
                # Concrete arguments inside a caller's jit (closed-over constants) are
                # traced too, and JAX refuses options there: the caller's options apply.
                if jitted is plain_for(policy.current()) or "compiler_options" not in str(err):
                    raise
                return plain_for(policy.current())(*args, **kwargs)

    def plain_for(chosen):
        return per_policy.get(chosen, jit_under)[0]

    def lower(*args, **kwargs):
        with jax.numpy_rank_promotion("allow"):
            return jitted_for(policy.current(), args, kwargs).lower(*args, **kwargs)

    call.lower = lower
    return call


__all__ = [
    "ENV_DISABLE",
    "MIN_COMPILE_SECONDS",
    "active_folder",
    "default_folder",
    "disable",
    "disabled_by_env",
    "enable_default",
    "jit",
    "scope",
    "user_configured",
]
