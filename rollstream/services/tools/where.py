"""A safe filter language over a message's fields, for `rollstream tap --where`.

    reward > 0.5 and policy_version >= 3
    task == "add" or not correct
    rollout.finish_reason == "length"
    len(completion_ids) > 100 and "x" in completion
    task in ("add", "mul") and rewards["format"] < 1

The expression is parsed with Python's `ast` and interpreted over a whitelist of node kinds:
`and`/`or`/`not`, comparisons (`== != < <= > >= in not in is is not`, chained), unary `-`,
arithmetic `+ - * / // %` on numbers (and `+` on strings), literals (numbers, strings, True,
False, None, tuples and lists), field names, dotted access (`rollout.task`), constant
subscripts (`rewards["math"]`, `samples[0].reward`) and the functions len, abs, min, max.
Anything else - other calls, lambdas, comprehensions, names or attributes starting with `_` -
is refused at parse time with WhereError. Nothing is ever passed to eval() or exec().

Names resolve against the message as a plain dict (see `to_builtins`): top-level fields
first; a name not found there is looked up inside a nested `rollout` (so `task` works on a
ScoredRollout). Reads nothing, writes nothing.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Collection, Mapping
from typing import Any

Env = Mapping[str, Any]
Fn = Callable[[Env], Any]

_FUNCTIONS: dict[str, Callable[..., Any]] = {"len": len, "abs": abs, "min": min, "max": max}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}
_ARITH: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
MAX_LENGTH = 2000  # characters of one expression


class WhereError(ValueError):
    """An expression that is not allowed or not valid (parse time), or one that cannot be
    evaluated on a given message (unknown field, None compared with a number, ...)."""


class Where:
    """A compiled `--where` expression; call `matches(message_dict)`."""

    def __init__(self, expr: str, fields: Collection[str] | None = None) -> None:
        """Parse `expr`. With `fields` (the message type's field names), a name that is not
        one of them is refused at parse time, so a typo does not silently match nothing."""
        self.expr = expr
        self._fields = set(fields) if fields is not None else None
        if len(expr) > MAX_LENGTH:
            raise WhereError(f"expression longer than {MAX_LENGTH} characters")
        try:
            tree = ast.parse(expr.strip(), mode="eval")
            self._fn = self._compile(tree.body)
        except SyntaxError as exc:
            raise WhereError(f"invalid expression {_short(expr)}: {exc.msg}") from None
        except (RecursionError, MemoryError):
            raise WhereError("expression nested too deeply") from None

    def evaluate(self, message: Env) -> Any:
        """The expression's value on `message`; WhereError if it cannot be computed."""
        try:
            return self._fn(message)
        except WhereError:
            raise
        except (TypeError, ValueError, ArithmeticError, RecursionError) as exc:
            raise WhereError(f"{exc}") from None

    def matches(self, message: Env) -> bool:
        """True if the expression holds for `message`; WhereError if it cannot be computed."""
        return bool(self.evaluate(message))

    # -- compiler: AST node -> closure over the message ------------------------------------

    def _compile(self, node: ast.AST) -> Fn:
        method = getattr(self, f"_c_{type(node).__name__}", None)
        if method is None:
            raise WhereError(f"{_describe(node)} is not allowed in --where")
        return method(node)

    def _c_Constant(self, node: ast.Constant) -> Fn:  # noqa: N802
        value = node.value
        if not isinstance(value, (int, float, str, bool, type(None))):
            raise WhereError(f"constant {value!r} is not allowed in --where")
        return lambda env: value

    def _c_Tuple(self, node: ast.Tuple | ast.List) -> Fn:  # noqa: N802
        items = [self._compile(e) for e in node.elts]
        return lambda env: tuple(f(env) for f in items)

    _c_List = _c_Tuple

    def _c_Name(self, node: ast.Name) -> Fn:  # noqa: N802
        name = _check_name(node.id)
        if name in _FUNCTIONS:
            raise WhereError(f"{name} is a function; call it, e.g. {name}(completion)")
        if self._fields is not None and name not in self._fields:
            known = ", ".join(sorted(f for f in self._fields if not f.startswith("_")))
            raise WhereError(f"unknown field {name!r}; fields: {known}")
        return lambda env: lookup(env, name)

    def _c_Attribute(self, node: ast.Attribute) -> Fn:  # noqa: N802
        attr = _check_name(node.attr)
        base = self._compile(node.value)

        def get(env: Env) -> Any:
            obj = base(env)
            if not isinstance(obj, Mapping) or attr not in obj:
                raise WhereError(f"no field {attr!r} in {_short(obj)}")
            return obj[attr]

        return get

    def _c_Subscript(self, node: ast.Subscript) -> Fn:  # noqa: N802
        index = _constant_index(node.slice)
        base = self._compile(node.value)

        def get(env: Env) -> Any:
            obj = base(env)
            try:
                if isinstance(obj, Mapping) or (isinstance(index, int) and _is_sequence(obj)):
                    return obj[index]
            except (KeyError, IndexError):
                raise WhereError(f"no item [{index!r}] in {_short(obj)}") from None
            raise WhereError(f"cannot index {_short(obj)} with [{index!r}]")

        return get

    def _c_BoolOp(self, node: ast.BoolOp) -> Fn:  # noqa: N802
        parts = [self._compile(v) for v in node.values]
        if isinstance(node.op, ast.And):

            def all_of(env: Env) -> Any:
                value: Any = True
                for f in parts:
                    value = f(env)
                    if not value:
                        return value
                return value

            return all_of

        def any_of(env: Env) -> Any:
            value: Any = False
            for f in parts:
                value = f(env)
                if value:
                    return value
            return value

        return any_of

    def _c_UnaryOp(self, node: ast.UnaryOp) -> Fn:  # noqa: N802
        operand = self._compile(node.operand)
        if isinstance(node.op, ast.Not):
            return lambda env: not operand(env)
        if isinstance(node.op, ast.USub):
            return lambda env: -_number(operand(env), "-")
        if isinstance(node.op, ast.UAdd):
            return lambda env: +_number(operand(env), "+")
        raise WhereError(f"operator {_describe(node.op)} is not allowed in --where")

    def _c_BinOp(self, node: ast.BinOp) -> Fn:  # noqa: N802
        op = _ARITH.get(type(node.op))
        if op is None:
            raise WhereError(f"operator {_describe(node.op)} is not allowed in --where")
        left, right = self._compile(node.left), self._compile(node.right)
        symbol = _SYMBOLS[type(node.op)]

        def arith(env: Env) -> Any:
            a, b = left(env), right(env)
            if symbol == "+" and isinstance(a, str) and isinstance(b, str):
                return a + b
            return op(_number(a, symbol), _number(b, symbol))

        return arith

    def _c_Compare(self, node: ast.Compare) -> Fn:  # noqa: N802
        first = self._compile(node.left)
        rest = [
            (_COMPARE[type(o)], self._compile(c))
            for o, c in zip(node.ops, node.comparators, strict=True)
        ]

        def compare(env: Env) -> bool:
            left = first(env)
            for op, f in rest:
                right = f(env)
                try:
                    ok = op(left, right)
                except TypeError:
                    msg = f"cannot compare {_short(left)} with {_short(right)}"
                    raise WhereError(msg) from None
                if not ok:
                    return False
                left = right
            return True

        return compare

    def _c_Call(self, node: ast.Call) -> Fn:  # noqa: N802
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            allowed = ", ".join(_FUNCTIONS)
            name = ast.unparse(node.func)
            raise WhereError(f"calling {name}() is not allowed; functions: {allowed}")
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise WhereError(f"{node.func.id}() takes plain positional arguments only")
        fn = _FUNCTIONS[node.func.id]
        args = [self._compile(a) for a in node.args]
        name = node.func.id

        def call(env: Env) -> Any:
            values = [a(env) for a in args]
            try:
                return fn(*values)
            except TypeError as exc:
                raise WhereError(f"{name}(): {exc}") from None

        return call


def lookup(message: Env, name: str) -> Any:
    """A top-level field of `message`, else the same field of its nested `rollout`."""
    if name in message:
        return message[name]
    nested = message.get("rollout")
    if isinstance(nested, Mapping) and name in nested:
        return nested[name]
    raise WhereError(f"no field {name!r} in this {message.get('schema', 'message')}")


def resolve_path(message: Env, path: str) -> Any:
    """The value at a dotted path such as `rollout.finish_reason` (first part via `lookup`)."""
    head, *rest = path.split(".")
    value = lookup(message, head)
    for part in rest:
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif part.lstrip("-").isdigit() and _is_sequence(value):
            try:
                value = value[int(part)]
            except IndexError:
                raise WhereError(f"no item [{part}] in {path!r}") from None
        else:
            raise WhereError(f"no field {part!r} in {path!r}")
    return value


_SYMBOLS = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
}


def _check_name(name: str) -> str:
    if name.startswith("_"):
        raise WhereError(f"names starting with '_' are not allowed: {name!r}")
    return name


def _constant_index(node: ast.AST) -> int | str:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _constant_index(node.operand)
        if isinstance(inner, int):
            return -inner
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, str):
            return _check_name(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    raise WhereError('subscripts must be a constant int or string, e.g. rewards["math"]')


def _number(value: Any, symbol: str) -> int | float:
    if isinstance(value, (int, float)):
        return value
    raise WhereError(f"{symbol!r} needs numbers, got {_short(value)}")


def _is_sequence(value: Any) -> bool:
    return isinstance(value, (list, tuple, str))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _describe(node: ast.AST) -> str:
    try:
        text = ast.unparse(node)
    except Exception:
        text = ""
    kind = type(node).__name__
    return f"{kind} `{text}`" if text else kind
