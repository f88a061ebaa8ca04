"""Typed settings: frozen dataclasses whose fields carry their own checks.

A method (or any component) declares its settings once, as a frozen dataclass built from
:func:`field` entries. The same class gives

- the defaults (``configs/default.py`` builds each ``methods.<name>`` section from it with
  :func:`to_dict`, so a default is written in one place only),
- validation: :func:`parse` turns a config section into an instance, or raises one
  :class:`~tmu_jax.errors.ConfigError` sentence naming the field, its value and what is valid,
- a hashable value: two equal settings are equal keys (for compiled programs and caches).

Nested settings are dataclass-typed fields (``twin: Twin = nested(Twin)``).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Mapping

from tmu_jax.errors import ConfigError

_CHECK = "tmu_jax.schema"


@dataclasses.dataclass(frozen=True)
class Check:
  """What a field accepts: its kind and an optional range or set of choices."""
  kind: str  # int | float | bool | str | list (comma-separated choices) | nested
  lo: float | None = None
  hi: float | None = None
  lo_open: bool = False
  hi_open: bool = False
  choices: tuple | None = None
  doc: str = ""

  def describe(self) -> str:
    if self.choices is not None:
      many = "a comma-separated subset of " if self.kind == "list" else "one of "
      return f"expected {many}{', '.join(map(str, self.choices))}"
    what = {"int": "an integer", "float": "a number", "bool": "True or False",
            "str": "a string"}.get(self.kind, self.kind)
    if self.lo is None and self.hi is None:
      return f"expected {what}"
    # An unbounded side is open: infinite values are never valid (check_value refuses them).
    left = "(" if self.lo_open or self.lo is None else "["
    right = ")" if self.hi_open or self.hi is None else "]"
    lo = "-inf" if self.lo is None else _num(self.lo)
    hi = "inf" if self.hi is None else _num(self.hi)
    return f"expected {what} in {left}{lo}, {hi}{right}"


def _num(v) -> str:
  return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else str(v)


def _kind_of(default) -> str:
  return ("bool" if isinstance(default, bool) else "int" if isinstance(default, int)
          else "float" if isinstance(default, float) else "str")


def field(default, *, lo=None, hi=None, lo_open=False, hi_open=False, choices=None,
          doc: str = "", kind: str | None = None):
  """A settings field with its default and check; ``kind`` is inferred from the default."""
  if kind is None:
    kind = _kind_of(default)
  check = Check(kind, lo, hi, lo_open, hi_open, tuple(choices) if choices else None, doc)
  return dataclasses.field(default=default, metadata={_CHECK: check})


def redefault(cls, name: str, default):
  """Field ``name`` of settings class ``cls`` with another default and the same check (bounds,
  choices, doc): what a subclass of settings (TMU+ over TMU) writes instead of repeating it."""
  base = {f.name: f for f in dataclasses.fields(cls)}[name]
  check = _check_of(base)
  if _kind_of(default) != check.kind:
    raise TypeError(f"{cls.__name__}.{name}: default {default!r} is not of kind {check.kind}")
  return dataclasses.field(default=default, metadata={_CHECK: check})


def nested(cls, doc: str = ""):
  """A field holding another settings dataclass (a sub-section of the config)."""
  return dataclasses.field(default_factory=cls, metadata={_CHECK: Check("nested", doc=doc)})


def _check_of(f: dataclasses.Field) -> Check:
  return f.metadata.get(_CHECK) or Check("str")


def _fail(where: str, value, valid: str):
  raise ConfigError(f"config field {where} = {value!r} is not valid: {valid}")


def _finite(value, kind: str) -> bool:
  """NaN and ±inf are never valid; nor is an integer too large for a float field."""
  if kind == "int":
    return True  # an Integral
  try:
    return math.isfinite(value)
  except OverflowError:
    return False


def check_value(check: Check, where: str, value):
  """``value`` if it passes ``check`` (converted to its kind), else one ConfigError."""
  if check.kind == "bool":
    if not isinstance(value, bool):
      _fail(where, value, check.describe())
    return value
  if check.kind in ("int", "float"):
    ok = isinstance(value, numbers.Integral) if check.kind == "int" else isinstance(
        value, numbers.Real)
    if isinstance(value, bool) or not ok or not _finite(value, check.kind):
      _fail(where, value, check.describe())
    bad_lo = check.lo is not None and (value <= check.lo if check.lo_open else value < check.lo)
    bad_hi = check.hi is not None and (value >= check.hi if check.hi_open else value > check.hi)
    if bad_lo or bad_hi:
      _fail(where, value, check.describe())
    return int(value) if check.kind == "int" else float(value)
  if check.kind == "list":
    parts = [p.strip() for p in str(value).split(",")] if isinstance(value, str) else None
    if not parts or any(p not in check.choices for p in parts) or len(set(parts)) != len(parts):
      _fail(where, value, check.describe())
    return ",".join(parts)
  if not isinstance(value, str) or (check.choices is not None and value not in check.choices):
    _fail(where, value, check.describe())
  return value


def parse(cls, section: Mapping[str, Any] | None, where: str, *,
          ignore: tuple = ("base", "rng_name")):
  """An instance of settings class ``cls`` from a config ``section`` (dict or ConfigDict).

  Missing keys take their defaults; an unknown key, a wrong type or an out-of-range value raises
  one ConfigError naming ``where.key``.
  """
  names = {f.name: f for f in dataclasses.fields(cls)}
  if section is not None and not callable(getattr(section, "items", None)):
    _fail(where, section, f"expected a section of settings ({', '.join(sorted(names))})")
  section = {} if section is None else dict(section.items())
  for key in section:
    if key not in names and key not in ignore:
      raise ConfigError(f"config field {where}.{key} is not a setting of this method; valid: "
                        f"{', '.join(sorted(names))}")
  values = {}
  for name, f in names.items():
    if name not in section:
      continue
    check = _check_of(f)
    if check.kind == "nested":
      # The default's class, so a subclass default (e.g. TMU+'s stronger unlearning) is kept.
      values[name] = parse(f.default_factory, section[name], f"{where}.{name}", ignore=())
    else:
      values[name] = check_value(check, f"{where}.{name}", section[name])
  out = cls(**values)
  validate = getattr(out, "validate", None)
  if validate is not None:  # cross-field rules of the class, as one sentence each
    validate(where)
  return out


def to_dict(settings_or_cls) -> dict[str, Any]:
  """The settings (or the class's defaults) as a plain nested dict, for a config section."""
  obj = settings_or_cls() if isinstance(settings_or_cls, type) else settings_or_cls
  return dataclasses.asdict(obj)


def replace(settings, **changes):
  """A copy with some fields changed; ``section__field`` changes a nested field."""
  flat, deep = {}, {}
  for k, v in changes.items():
    if "__" in k:
      head, tail = k.split("__", 1)
      deep.setdefault(head, {})[tail] = v
    else:
      flat[k] = v
  for head, sub in deep.items():
    flat[head] = replace(getattr(settings, head), **sub)
  return dataclasses.replace(settings, **flat)
