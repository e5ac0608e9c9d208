"""Argument checks shared by the public functions: numbers, flags, name patterns and adapter dtypes.

Every public gatecore function checks its arguments here before it changes the model, so a
call that raises leaves the model as it was. Messages name the argument, the value given and
what is allowed, e.g. "alpha must be a finite number in (0, inf), got nan".

A value of the wrong type raises `WrongType`, which is a TypeError and also a ValueError, so
code that catches ValueError for bad input catches it too.
"""

from __future__ import annotations

import math
import numbers

import torch


class WrongType(TypeError, ValueError):
    """An argument of the wrong type (a str where a number belongs, an int where a pattern belongs)."""


def _interval(low, high, low_open: bool, high_open: bool) -> str:
    left = "(" if low_open or low is None else "["
    right = ")" if high_open or high is None else "]"
    return f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"


def _type_name(value) -> str:
    return type(value).__name__


def check_real(
    name: str,
    value,
    low=None,
    high=None,
    low_open: bool = False,
    high_open: bool = False,
    what: str = "a finite number",
) -> float:
    """`value` as a float: a real number (not a bool, not a str), finite, inside the interval.

    low/high None means unbounded; *_open excludes the bound itself.
    """
    rng = _interval(low, high, low_open, high_open)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise WrongType(f"{name} must be {what} in {rng}, got {value!r} ({_type_name(value)})")
    v = float(value)
    below = low is not None and (v <= low if low_open else v < low)
    above = high is not None and (v >= high if high_open else v > high)
    if not math.isfinite(v) or below or above:
        raise ValueError(f"{name} must be {what} in {rng}, got {value!r}")
    return v


def check_positive(name: str, value) -> float:
    """A positive finite float: (0, inf)."""
    return check_real(name, value, low=0, low_open=True, what="a positive finite number")


def check_fraction(name: str, value) -> float:
    """A float in [0, 1): a sparsity, a dropout probability."""
    return check_real(name, value, low=0, high=1, high_open=True, what="a number")


def check_int(name: str, value, low: int = 1, high: int | None = None, what: str = "an integer") -> int:
    """`value` as an int in [low, high] (high None: unbounded); a bool or a float with a fraction is refused.

    A wrong type is a ValueError here too (as `WrongType`): r=2.5 is a bad rank, not only a bad type.
    """
    rng = _interval(low, high, False, False)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise WrongType(f"{name} must be {what} in {rng}, got {value!r} ({_type_name(value)})")
    v = int(value)
    if v < low or (high is not None and v > high):
        raise ValueError(f"{name} must be {what} in {rng}, got {value!r}")
    return v


def check_bool(name: str, value) -> bool:
    """True or False only: a str like 'no' is truthy and would silently mean yes."""
    if not isinstance(value, bool):
        raise WrongType(f"{name} must be True or False, got {value!r} ({_type_name(value)})")
    return value


def check_patterns(targets) -> list[str]:
    """Name patterns as a non-empty list of str: one str, or an iterable of str."""
    if isinstance(targets, str):
        return [targets]
    try:
        items = list(targets)
    except TypeError:
        raise WrongType(
            f"targets must be a name pattern (str) or a list of them, got {targets!r} ({_type_name(targets)})"
        ) from None
    bad = [t for t in items if not isinstance(t, str)]
    if bad:
        raise WrongType(
            f"targets must be name patterns (str), got {bad[0]!r} ({_type_name(bad[0])}) "
            f"in {items!r}; e.g. targets=['query', 'value'] or [r'layer\\.0\\..*']"
        )
    if not items:
        raise ValueError("targets is empty; pass name patterns, or None for the model type's preset")
    return items


HALF_DTYPES = (torch.float16, torch.bfloat16)


def check_adapter_dtype(weight_dtype, dtype=None):
    """The dtype of the adapters (gate thetas, LoRA A and B) of a layer whose weight has `weight_dtype`.

    None: float32 on a half-precision (float16/bfloat16) weight, as PEFT does: near theta = 1 a
    bfloat16 step is 2^-7, so Adam updates below ~0.004 would be rounded away. Otherwise the
    weight's dtype (a float32/float64 model is untouched). A floating torch.dtype: exactly that one
    (e.g. the model's own, to keep adapters in bfloat16).
    """
    if dtype is None:
        return torch.float32 if weight_dtype in HALF_DTYPES else weight_dtype
    if not isinstance(dtype, torch.dtype):
        raise WrongType(
            f"adapter_dtype must be None or a floating torch.dtype (e.g. torch.float32), got {dtype!r} "
            f"({_type_name(dtype)})"
        )
    if not dtype.is_floating_point:
        raise ValueError(f"adapter_dtype must be a floating torch.dtype (e.g. torch.float32), got {dtype}")
    return dtype
