"""`--set KEY=VALUE` on the typed build config (the grammar: compiler/pipeline/config.py).

The key is walked through the config's own types, so an unknown key is refused with the valid
keys where the walk stopped, and a value of the wrong type is refused naming the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable
from typing import Annotated, Any, Literal, TypeVar, Union

import yaml
from pydantic import BaseModel, ValidationError

from compiler.core.errors import ConfigError
from compiler.core.targets import TARGET_ARCH
from compiler.core.tolerance import Tolerance
from compiler.pipeline.variant import PRECISION_IS_DERIVED, VariantConfig
from passes.registry import PASSES

__all__ = ["apply_override"]

_C = TypeVar("_C", bound=BaseModel)

# --------------------------------------------------------------------------- --set overrides

_Slot = tuple[dict[str, Any], str]  # (the mapping that holds the value, its key)


def apply_override(config: _C, item: str) -> _C:
    """`config` with one `KEY=VALUE` applied (grammar: the module docstring), re-validated."""
    key, parts, text = _split_key(item)
    data = config.model_dump(mode="python")
    value = _parse_value(text.strip())
    for holder, name in _slots(type(config), data, parts, key):
        holder[name] = value
    try:
        return config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_set_error(exc, key, text.strip())) from None


def _split_key(item: str) -> tuple[str, list[str], str]:
    """`KEY=VALUE` -> (key as written, its parts, value text). Parts are separated by '.'; a
    part in double quotes is taken as written (dots and '=' included; `\\"` is a quote), so
    `dims."p2o.DynamicDimension.1".opt=4` names the dim `p2o.DynamicDimension.1`."""
    end, quoted = -1, False
    for i, c in enumerate(item):
        if c == '"' and (i == 0 or item[i - 1] != "\\"):
            quoted = not quoted
        elif c == "=" and not quoted:
            end = i
            break
    if quoted:
        raise ConfigError(f"--set {item}: a quoted part of the key has no closing '\"'")
    key = item[:end].strip() if end >= 0 else ""
    if not key:
        raise ConfigError(
            f"--set {item!r}: expected KEY=VALUE, e.g. cpu.quantize.calibration_method=entropy"
        )
    return key, _key_parts(key), item[end + 1 :].strip()


def _key_parts(key: str) -> list[str]:
    parts: list[str] = []
    i = 0
    while True:
        if key.startswith('"', i):
            i, part = _quoted(key, i)
        else:
            j = key.find(".", i)
            part = (key[i:] if j < 0 else key[i:j]).strip()
            i = len(key) if j < 0 else j
            if not part:
                raise ConfigError(
                    f"--set {key}: empty part in the key; parts are separated by one '.' "
                    '(quote a name that holds dots: dims."a.b".opt=4)'
                )
        parts.append(part)
        if i >= len(key):
            return parts
        if key[i] != ".":
            raise ConfigError(f"--set {key}: a quoted part must be followed by '.' or '='")
        i += 1
        if i >= len(key):
            raise ConfigError(f"--set {key}: the key ends with '.'")


def _quoted(key: str, start: int) -> tuple[int, str]:
    """The quoted part opening at `start`: the index after its closing quote, and its text."""
    out: list[str] = []
    i = start + 1
    while i < len(key):
        c = key[i]
        if c == "\\" and i + 1 < len(key):
            out.append(key[i + 1])
            i += 2
            continue
        if c == '"':
            return i + 1, "".join(out)
        out.append(c)
        i += 1
    raise ConfigError(f"--set {key}: a quoted part of the key has no closing '\"'")


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _format_set_error(exc: ValidationError, key: str, text: str) -> str:
    leaf = key.split(".")[-1]
    problems: list[str] = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        where = "" if loc.endswith(leaf) else f" (at {loc})"
        problem = f"{err['msg']}{where}"
        if problem not in problems:
            problems.append(problem)
    return f"--set {key}={text}: " + "; ".join(problems)


def _slots(model: type[BaseModel], data: dict[str, Any], parts: list[str], key: str) -> list[_Slot]:
    head = parts[0]
    built = data["targets"]
    if head in built:
        return _target_slots(data, head, parts[1:], key)
    if head in TARGET_ARCH:
        raise ConfigError(
            f"--set {key}: target '{head}' is not built in this run (--targets {','.join(built)})"
        )
    keys = {n: f.annotation for n, f in model.model_fields.items() if n != "targets"}
    if head not in keys:
        _unknown(key, head, [], [*keys, *built])
    return _walk(model, data, parts, [], key, data)


def _target_slots(data: dict[str, Any], target: str, rest: list[str], key: str) -> list[_Slot]:
    """`<target>.<variant>...` (one variant) or `<target>.<pass>...` (every variant with it)."""
    variants: dict[str, Any] = data["targets"][target]["variants"]
    present = sorted({p["name"] for v in variants.values() for p in v["passes"]})
    if not rest:
        _unknown(key, "", [target], [*variants, *present])
    name, tail = rest[0], rest[1:]
    if name in variants:
        if not tail:
            return [(variants, name)]
        return _walk(VariantConfig, variants[name], tail, [target, name], key, data)
    having = [v for v in variants.values() if any(p["name"] == name for p in v["passes"])]
    if having:
        return [s for v in having for s in _walk(VariantConfig, v, rest, [target], key, data)]
    if name in PASSES:
        raise ConfigError(
            f"--set {key}: no variant of target '{target}' has a '{name}' pass (its variants' "
            f"passes: {', '.join(present) or 'none'}); add the pass to a variant in the config file"
        )
    _unknown(key, name, [target], [*variants, *present])


def _walk(
    tp: Any, node: dict[str, Any], parts: list[str], trail: list[str], key: str, root: Any
) -> list[_Slot]:
    """The slots `parts` names below `node`, a dumped value of type `tp`."""
    tp = _concrete(tp, node)
    name, rest = parts[0], parts[1:]
    if tp is VariantConfig:
        if name == "precision":
            raise ConfigError(f"--set {key}: {PRECISION_IS_DERIVED}")
        mine = [p for p in node["passes"] if p["name"] == name]
        if mine:
            cls = PASSES[name].config_cls
            if not rest:
                _unknown(key, "", [*trail, name], [f for f in cls.model_fields if f != "name"])
            return [s for p in mine for s in _walk(cls, p, rest, [*trail, name], key, root)]
    if typing.get_origin(tp) is dict:
        key_type, child = typing.get_args(tp)
        allowed = _literal_values(key_type)
        if allowed and name not in allowed:
            _unknown(key, name, trail, list(allowed))
        if name not in node and rest:
            node[name] = _seed(child, name, root)
    else:
        fields = _fields(tp)
        if fields is None:
            raise ConfigError(
                f"--set {key}: '{'.'.join(trail)}' is a value, not a section; it has no '{name}'"
            )
        if name not in fields:
            passes = [p["name"] for p in node["passes"]] if tp is VariantConfig else []
            _unknown(key, name, trail, [*fields, *passes])
        child = fields[name]
    if not rest:
        return [(node, name)]
    if node.get(name) is None:
        node[name] = {}
    if not isinstance(node[name], dict):
        where = ".".join([*trail, name])
        raise ConfigError(
            f"--set {key}: '{where}' is a value, not a section; it has no '{rest[0]}'"
        )
    return _walk(child, node[name], rest, [*trail, name], key, root)


def _unknown(key: str, name: str, trail: list[str], valid: Iterable[str]) -> typing.NoReturn:
    where = f"'{'.'.join(trail)}'" if trail else "the top level"
    what = f"unknown key '{name}' in {where}" if name else f"{where} needs a key after it"
    listed = ", ".join(sorted(dict.fromkeys(valid))) or "none"
    raise ConfigError(f"--set {key}: {what}; valid keys there: {listed}")


def _concrete(tp: Any, node: Any) -> Any:
    """Unwrap Annotated and Optional; pick the member of a tagged union `node` belongs to."""
    if typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(members) == 1:
            return _concrete(members[0], node)
        for member in members:
            if isinstance(member, type) and issubclass(member, BaseModel) and _tagged(member, node):
                return member
        return tp  # a union of plain values: a leaf
    return tp


def _tagged(model: type[BaseModel], node: Any) -> bool:
    """Does `node` carry `model`'s tag (its one-value Literal fields: `name`, `backend`)?"""
    if not isinstance(node, dict):
        return False
    tags = {
        n: _literal_values(f.annotation)
        for n, f in model.model_fields.items()
        if len(_literal_values(f.annotation)) == 1
    }
    return bool(tags) and all(node.get(n) == v[0] for n, v in tags.items())


def _literal_values(tp: Any) -> tuple[Any, ...]:
    return typing.get_args(tp) if typing.get_origin(tp) is Literal else ()


def _fields(tp: Any) -> dict[str, Any] | None:
    """Field name -> type of a pydantic model or dataclass; None for a plain value."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return {n: f.annotation for n, f in tp.model_fields.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return {f.name: hints[f.name] for f in dataclasses.fields(tp)}
    return None


def _seed(tp: Any, name: str, root: dict[str, Any]) -> dict[str, Any]:
    """A new entry of a keyed section: a per-output tolerance starts from the build's
    tolerance for that precision; anything else starts empty (required fields then say so)."""
    if _concrete(tp, {}) is Tolerance:
        return dict(root["parity"]["tolerances"].get(name, {}))
    return {}
