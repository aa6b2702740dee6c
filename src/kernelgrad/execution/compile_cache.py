"""kernelgrad's persistent cache of compiled programs, on by default for its NumPy calls.

A new process pays 25-100 ms of XLA compilation per program and size bucket. The engine
compiles the programs of kernelgrad's NumPy calls ahead of time, through :func:`compile`,
which keeps each one on disk, serialised by JAX's public
``jax.experimental.serialize_executable``, and loads it in the next process instead of
compiling it again. Only programs that took :data:`MIN_COMPILE_SECONDS` or more to
compile are stored. JAX's own configuration is never touched, and the user's programs never
come here.

* The folder is ``$XDG_CACHE_HOME/kernelgrad/jax`` (``~/.cache/kernelgrad/jax``).
* ``KERNELGRAD_NO_COMPILE_CACHE=1`` (any value but ``""``/``"0"``/``"false"``/``"no"``)
  turns it off at import; :func:`disable` turns it off at run time.
* A cache the user configured for JAX (``jax.config.update("jax_compilation_cache_dir",
  ...)`` or ``JAX_COMPILATION_CACHE_DIR``) wins: kernelgrad then compiles the usual way
  and JAX's cache, with the user's thresholds, serves its programs too. It is also the
  only persistent cache for programs traced from JAX arrays (:func:`jit`), since JAX has no
  public way to keep one for a subset of programs.
* An entry is keyed on the program's text, its compile options, the JAX and jaxlib versions,
  the backend, the device kind, ``XLA_FLAGS`` and the CPU's feature flags, so a folder
  shared by several machines or versions never serves a program compiled for another.
  An entry that fails to load is compiled afresh and replaced.

A serialised executable is trusted code, as JAX warns for its own cache: never point the
cache at a folder that other users can write.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import time
from pathlib import Path

import jax
import jax.extend.backend
import jaxlib
from jax.experimental import serialize_executable

from . import policy, xla_options
from .identity import IdentityCache

#: Environment variable that turns kernelgrad's default cache off.
ENV_DISABLE = "KERNELGRAD_NO_COMPILE_CACHE"

#: Programs that compiled faster than this are not worth a disk read and are not stored.
MIN_COMPILE_SECONDS = 0.02

_FOLDER: str | None = None  # kernelgrad's own folder, while its cache is on

#: Programs loaded from the folder, compiled, and stored in it, by this process.
STATS = {"hits": 0, "misses": 0, "stored": 0}


def default_folder() -> Path:
    """``$XDG_CACHE_HOME/kernelgrad/jax``, or ``~/.cache/kernelgrad/jax``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kernelgrad" / "jax"


def disabled_by_env() -> bool:
    """Whether ``KERNELGRAD_NO_COMPILE_CACHE`` asks for no default cache."""
    return os.environ.get(ENV_DISABLE, "").strip().lower() not in ("", "0", "false", "no")


def user_configured() -> bool:
    """Whether the user configured a JAX compilation cache folder of their own."""
    return bool(jax.config.jax_compilation_cache_dir)


def active_folder() -> str | None:
    """The folder kernelgrad's programs are cached in now, or None when caching is off."""
    return jax.config.jax_compilation_cache_dir or _FOLDER


def enable_default(folder: str | os.PathLike | None = None) -> str | None:
    """Cache kernelgrad's programs in ``folder`` (default :func:`default_folder`).

    Returns the folder in use, or None when the environment disabled it, the user
    configured a JAX cache of their own (which then serves kernelgrad too), or the folder
    cannot be created (a read-only home directory must not break importing kernelgrad).
    """
    global _FOLDER
    if disabled_by_env() or user_configured():
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


@contextlib.contextmanager
def paused():
    """No loading or storing inside; the folder as it was afterwards (the bench's compiles
    are real compiles for every approach)."""
    global _FOLDER
    folder, _FOLDER = _FOLDER, None
    try:
        yield
    finally:
        _FOLDER = folder


@functools.cache
def _machine() -> str:
    """What a compiled program depends on besides its text and options."""
    device = jax.devices()[0]
    parts = [jax.__version__, jaxlib.__version__, device.platform, device.device_kind]
    parts.append(f"{len(jax.devices())} devices")
    parts += [jax.extend.backend.get_backend().platform_version, platform.machine()]
    try:  # XLA:CPU compiles for this CPU's instruction set
        with open("/proc/cpuinfo") as fh:
            parts += sorted({line for line in fh if line.startswith(("flags", "Features"))})
    except OSError:
        parts.append(platform.processor())
    return "\n".join(parts)


def _key(lowered, compiler_options) -> str:
    digest = hashlib.sha256()
    for part in (lowered.as_text(), repr(sorted((compiler_options or {}).items()))):
        digest.update(part.encode())
    digest.update(_machine().encode())
    digest.update(os.environ.get("XLA_FLAGS", "").encode())
    return f"kernelgrad-{digest.hexdigest()}"


def compile(lowered, compiler_options=None):
    """``lowered.compile(compiler_options)``, from kernelgrad's folder when it holds it.

    With the cache off, or a user's own JAX cache configured, this is the plain compile.
    """
    folder = _FOLDER
    if folder is None or user_configured():
        return lowered.compile(compiler_options=compiler_options)
    path = Path(folder) / _key(lowered, compiler_options)
    try:
        payload = path.read_bytes()
    except OSError:
        payload = None
    if payload is not None:
        try:
            # The program runs on the default device, as compiling it would have it do (by
            # default a process's every device would be asked for a shard).
            exe = serialize_executable.deserialize_and_load(
                payload, lowered.in_tree, lowered.out_tree, execution_devices=jax.devices()[:1]
            )
        except Exception:  # written by another version, or damaged: compile it again
            pass
        else:
            STATS["hits"] += 1
            return exe
    began = time.perf_counter()
    exe = lowered.compile(compiler_options=compiler_options)
    STATS["misses"] += 1
    if time.perf_counter() - began >= MIN_COMPILE_SECONDS:
        _store(path, exe)
    return exe


def _store(path: Path, exe) -> None:
    """Write ``exe`` to ``path`` atomically (a process reading it sees all of it or none)."""
    try:
        payload = serialize_executable.serialize(exe)[0]
    except Exception:  # a program JAX cannot serialise (closed-over constant arrays)
        return
    part = path.with_name(f"{path.name}.{os.getpid()}.part")
    try:
        part.write_bytes(payload)
        os.replace(part, path)
        STATS["stored"] += 1
    except OSError:  # a full or read-only disk: run without storing
        part.unlink(missing_ok=True)


def jit(fun=None, **options):
    """``jax.jit`` for kernelgrad's own programs; a decorator.

    Calls are traced anew under each :mod:`kernelgrad.execution.policy`, and trace with
    NumPy-style rank promotion allowed: the rules broadcast (n, d) against (d,) on purpose,
    and a user's strict
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
        with jax.numpy_rank_promotion("allow"):
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
    "STATS",
    "active_folder",
    "compile",
    "default_folder",
    "disable",
    "disabled_by_env",
    "enable_default",
    "jit",
    "paused",
    "user_configured",
]
