"""The condition language of ABAC policies: parsed once when a policy is saved, evaluated per request, never eval'd."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from math import isfinite
from typing import Any, NamedTuple, NoReturn, TypeGuard

__all__ = [
    "MAX_CONDITIONS",
    "MAX_DEPTH",
    "MAX_TEXT",
    "Condition",
    "ConditionError",
    "EvaluationError",
    "compile_conditions",
]

#: Limits on what a policy author may save: they bound parse time, recursion and evaluation cost.
MAX_TEXT = 2000
MAX_DEPTH = 32
MAX_CONDITIONS = 64

#: The canonical roots, in the order `holds` receives them.
ROOTS = ("subject", "resource", "context")
KEYWORDS = frozenset({"and", "or", "not", "in", "contains", "true", "false", "null"})
DURATION_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
COMPARISON_OPERATORS = ("==", "!=", "<", "<=", ">", ">=")


class ConditionError(ValueError):
    """A condition that does not parse: where (`index`, `key`, `position` in `text`) and why (`message`)."""

    def __init__(
        self, message: str, *, index: int = 0, key: str | None = None, position: int = 0, text: str = ""
    ) -> None:
        where = f"conditions[{index}]" if key is None else f"conditions[{index}][{key!r}]"
        super().__init__(f"{where}: {message}")
        self.message = message
        self.index = index
        self.key = key
        self.position = position
        self.text = text


class EvaluationError(Exception):
    """A condition that cannot be evaluated for these attributes (missing attribute, wrong types, bad timestamp)."""


_Evaluator = Callable[[Any, Any, Any], Any]


@dataclass(frozen=True)
class Condition:
    """A compiled condition: `source` is its canonical text; `holds` decides it for one request without re-parsing."""

    source: str
    references_resource: bool
    # The compiled closure tree; two conditions with the same source are equal whatever closures they hold.
    _evaluate: _Evaluator = field(repr=False, compare=False)

    def holds(self, subject: Mapping[str, Any], resource: Mapping[str, Any] | None, context: Mapping[str, Any]) -> bool:
        """Returns True when the condition holds for these attributes, False when it does not.

        Raises EvaluationError when it cannot be decided: an attribute is missing, types do not fit, or a
        timestamp does not parse.
        """
        try:
            value = self._evaluate(subject, resource, context)
        except (TypeError, ValueError, ArithmeticError) as exc:
            # Attribute mappings come from callers; whatever they raise must still read as "cannot decide".
            raise EvaluationError(f"{self.source} cannot be evaluated ({type(exc).__name__})") from exc
        if value is True or value is False:
            return value
        raise EvaluationError(f"{self.source} is {_a(_kind(value))}, not true or false")


def compile_conditions(conditions: Sequence[str | Mapping[str, Any]], resource_type: str) -> tuple[Condition, ...]:
    """Returns one compiled Condition per item, in order; () for an empty list (which the caller treats as true).

    `resource_type` (e.g. "booking") may be used in paths as an alias of `resource`. Raises ConditionError for
    the first item that does not parse.
    """
    if isinstance(conditions, (str, bytes)) or not isinstance(conditions, Sequence):
        raise ConditionError("conditions must be a list of strings or objects")
    if len(conditions) > MAX_CONDITIONS:
        raise ConditionError(
            f"expected at most {MAX_CONDITIONS} conditions, found {len(conditions)}", index=MAX_CONDITIONS
        )
    roots = _roots_for(resource_type)
    return tuple(_compile_item(item, index, roots) for index, item in enumerate(conditions))


# --- Parsing -----------------------------------------------------------------------------------------------


class _Problem(Exception):
    """A parse failure inside one text; the caller adds which condition and key it was."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


class _Token(NamedTuple):
    kind: str  # "name", "str", "num", "dur", "op", "eof", or the punctuation itself: ( ) [ ] ,
    value: Any
    pos: int
    text: str


_SPACE = " \t\r\n"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
# Longest first, so that "<=" is never read as "<" followed by "=".
_OPERATORS = ("==", "!=", "<=", ">=", "<", ">", "+", "-")
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t"}
# The dict form's "<key> <value>" rule: a value starting with one of these is a comparison, anything else a literal.
_LEADING_OPERATOR = re.compile(r"\s*(?:==|!=|>=|<=|>|<|in\s|not\s+in\s|contains\s)")


def _tokenize(text: str) -> list[_Token]:
    """Returns the tokens of `text`, ending with an "eof" token at len(text)."""
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in _SPACE:
            i += 1
        if i >= n:
            tokens.append(_Token("eof", None, n, ""))
            return tokens
        ch = text[i]
        if ch in "()[],":
            tokens.append(_Token(ch, ch, i, ch))
            i += 1
        elif ch in "'\"":
            i = _lex_string(text, i, tokens)
        elif match := _NUMBER.match(text, i):
            i = _lex_number(text, match, tokens)
        elif match := _IDENT.match(text, i):
            i = _lex_name(text, match, tokens)
        else:
            op = next((op for op in _OPERATORS if text.startswith(op, i)), None)
            if op is None:
                hint = " (use '==' to compare)" if ch == "=" else ""
                raise _Problem(f"unexpected character {ch!r} at position {i}{hint}", i)
            tokens.append(_Token("op", op, i, op))
            i += len(op)


def _lex_string(text: str, start: int, tokens: list[_Token]) -> int:
    """Appends the string literal opening at `start`; returns the index after its closing quote."""
    quote, i, n = text[start], start + 1, len(text)
    chars: list[str] = []
    while i < n:
        ch = text[i]
        if ch == quote:
            tokens.append(_Token("str", "".join(chars), start, text[start : i + 1]))
            return i + 1
        if ch == "\\":
            if i + 1 >= n:
                break
            escape = text[i + 1]
            if escape not in _ESCAPES:
                raise _Problem(f"unknown escape '\\{escape}' at position {i}; expected one of \\\\ \\' \\\" \\n \\t", i)
            chars.append(_ESCAPES[escape])
            i += 2
        else:
            chars.append(ch)
            i += 1
    raise _Problem(f"unterminated string at position {start}: expected a closing {quote}", start)


def _lex_number(text: str, match: re.Match[str], tokens: list[_Token]) -> int:
    """Appends a number, or a duration when a unit follows the digits with no space; returns the index after it."""
    digits, end = match.group(), match.end()
    value = _number(digits, match.start())
    unit_match = _IDENT.match(text, end)
    if unit_match is None:
        tokens.append(_Token("num", value, match.start(), digits))
        return end
    unit = unit_match.group()
    if unit not in DURATION_UNITS:
        raise _Problem(f"unknown duration unit {unit!r} at position {end}; expected one of ms, s, m, h, d, w", end)
    try:
        duration = DURATION_UNITS[unit] * value
    except OverflowError:
        raise _Problem(f"duration out of range at position {match.start()}", match.start()) from None
    tokens.append(_Token("dur", duration, match.start(), digits + unit))
    return unit_match.end()


def _number(digits: str, position: int) -> int | float:
    """Returns the value of a numeric literal; a decimal too large for a float is an error, not infinity."""
    if "." not in digits:
        return int(digits)
    value = float(digits)
    if not isfinite(value):
        raise _Problem(f"number out of range at position {position}", position)
    return value


def _lex_name(text: str, match: re.Match[str], tokens: list[_Token]) -> int:
    """Appends a dotted name (a keyword, function name or attribute path); returns the index after it."""
    segments, positions, end = [match.group()], [match.start()], match.end()
    while end < len(text) and text[end] == ".":
        found = _IDENT.match(text, end + 1)
        if found is None:
            raise _Problem(f"expected an attribute name after '.' at position {end + 1}", end + 1)
        segments.append(found.group())
        positions.append(found.start())
        end = found.end()
    for segment, position in zip(segments, positions, strict=True):
        # Lookups only ever index mappings, so a dunder could not reach Python internals; it is refused anyway
        # because no attribute is named like that and such a condition is an attack or a mistake.
        if segment.startswith("__"):
            raise _Problem(f"names starting with '__' are not allowed: {segment!r} at position {position}", position)
    tokens.append(_Token("name", tuple(segments), match.start(), text[match.start() : end]))
    return end


# The syntax tree. Each node remembers where it starts, for "at position N" in save-time errors.


@dataclass(frozen=True, slots=True)
class _Lit:
    value: Any
    text: str  # canonical rendering
    pos: int


@dataclass(frozen=True, slots=True)
class _List:
    items: tuple[_Node, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class _Path:
    root: str  # one of ROOTS: aliases are resolved at parse time
    segments: tuple[str, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class _Now:
    pos: int


@dataclass(frozen=True, slots=True)
class _Not:
    operand: _Node
    pos: int


@dataclass(frozen=True, slots=True)
class _Bool:
    op: str  # "and" | "or"
    operands: tuple[_Node, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class _Compare:
    op: str
    left: _Node
    right: _Node
    pos: int


@dataclass(frozen=True, slots=True)
class _Arith:
    # n-ary rather than nested, so that a long "a + b + c ..." never makes a deep tree.
    first: _Node
    rest: tuple[tuple[str, _Node], ...]
    pos: int


_Node = _Lit | _List | _Path | _Now | _Not | _Bool | _Compare | _Arith


class _Parser:
    """A recursive-descent parser over one text; `what` names that text in "found the end of the ..." messages."""

    def __init__(self, text: str, roots: Mapping[str, str], what: str = "condition") -> None:
        if len(text) > MAX_TEXT:
            raise _Problem(
                f"expected at most {MAX_TEXT} characters, found {len(text)} (the excess starts at position {MAX_TEXT})",
                MAX_TEXT,
            )
        self.tokens = _tokenize(text)
        self.index = 0
        self.depth = 0
        self.roots = roots
        self.what = what

    # Entry points.

    def expression(self) -> _Node:
        """Returns the tree of a whole condition."""
        node = self._or()
        _require_boolean(node)
        self._expect_end("an operator or the end of the condition")
        return node

    def key(self) -> _Path:
        """Returns the attribute path that is a dict-form key."""
        token = self._peek()
        if token.kind != "name":
            self._fail("an attribute path such as user.role", token)
        node = self._path(token)
        self._advance()
        self._expect_end(f"the end of the {self.what}")
        return node

    def tail(self, left: _Node) -> _Compare:
        """Returns `<left> <operator> <operand>`, the operator and operand read from this text (a dict-form value)."""
        op = self._comparison_operator()
        if op is None:
            self._fail("a comparison operator", self._peek())
        right = self._additive()
        self._expect_end(f"the end of the {self.what}")
        return _Compare(op, left, right, left.pos)

    # Token helpers.

    def _peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def _advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def _is_keyword(self, word: str, ahead: int = 0) -> bool:
        token = self._peek(ahead)
        return token.kind == "name" and token.value == (word,)

    def _fail(self, expected: str, token: _Token, hint: str = "") -> NoReturn:
        found = f"the end of the {self.what}" if token.kind == "eof" else repr(token.text)
        raise _Problem(f"expected {expected} at position {token.pos}, found {found}{hint}", token.pos)

    def _expect(self, kind: str, expected: str, hint: str = "") -> None:
        if self._peek().kind != kind:
            self._fail(expected, self._peek(), hint)
        self._advance()

    def _expect_end(self, expected: str) -> None:
        if self._peek().kind != "eof":
            self._fail(expected, self._peek())

    def _enter(self, token: _Token) -> None:
        # Every nesting level costs Python stack frames here, in rendering and in evaluation.
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Problem(f"nesting deeper than {MAX_DEPTH} levels at position {token.pos}", token.pos)

    # Grammar, loosest first: or < and < not < comparison < + - < operand.

    def _or(self) -> _Node:
        return self._chain("or", self._and)

    def _and(self) -> _Node:
        return self._chain("and", self._not)

    def _chain(self, word: str, operand: Callable[[], _Node]) -> _Node:
        operands = [operand()]
        while self._is_keyword(word):
            self._advance()
            operands.append(operand())
        if len(operands) == 1:
            return operands[0]
        flat: list[_Node] = []
        for node in operands:
            _require_boolean(node)
            # "(a and b) and c" is "a and b and c": one canonical source, one flat loop at evaluation.
            flat.extend(node.operands if isinstance(node, _Bool) and node.op == word else (node,))
        return _Bool(word, tuple(flat), flat[0].pos)

    def _not(self) -> _Node:
        if not self._is_keyword("not"):
            return self._comparison()
        token = self._advance()
        self._enter(token)
        operand = self._not()
        self.depth -= 1
        _require_boolean(operand)
        return _Not(operand, token.pos)

    def _comparison(self) -> _Node:
        left = self._additive()
        op = self._comparison_operator()
        if op is None:
            return left
        return _Compare(op, left, self._additive(), left.pos)

    def _comparison_operator(self) -> str | None:
        """Consumes and returns a comparison operator, or returns None when the next token is not one."""
        token = self._peek()
        if token.kind == "op" and token.value in COMPARISON_OPERATORS:
            self._advance()
            return token.value
        for word in ("in", "contains"):
            if self._is_keyword(word):
                self._advance()
                return word
        if self._is_keyword("not"):
            self._advance()
            if not self._is_keyword("in"):
                self._fail("'in' after 'not'", self._peek())
            self._advance()
            return "not in"
        return None

    def _additive(self) -> _Node:
        first = self._signed()
        rest: list[tuple[str, _Node]] = []
        while self._peek().kind == "op" and self._peek().value in ("+", "-"):
            rest.append((self._advance().value, self._signed()))
        return _Arith(first, tuple(rest), first.pos) if rest else first

    def _signed(self) -> _Node:
        token = self._peek()
        if token.kind != "op" or token.value != "-":
            return self._operand()
        # A minus sign only negates a number or duration literal: the language has no general unary minus.
        self._advance()
        literal = self._peek()
        if literal.kind not in ("num", "dur"):
            self._fail("a number or duration after '-'", literal)
        self._advance()
        return _Lit(-literal.value, "-" + literal.text, token.pos)

    def _operand(self) -> _Node:
        token = self._peek()
        if token.kind in ("str", "num", "dur"):
            self._advance()
            text = _quote(token.value) if token.kind == "str" else token.text
            return _Lit(token.value, text, token.pos)
        if token.kind == "(":
            self._advance()
            self._enter(token)
            node = self._or()
            self._expect(")", "')'")
            self.depth -= 1
            return node
        if token.kind == "[":
            return self._list(token)
        if token.kind != "name":
            self._fail("an operand", token)
        word = token.value[0] if len(token.value) == 1 else None
        if word in ("true", "false", "null"):
            self._advance()
            return _Lit({"true": True, "false": False, "null": None}[word], word, token.pos)
        if word in KEYWORDS:
            self._fail("an operand", token)
        if word is not None and (word == "now" or self._peek(1).kind == "("):
            return self._call(token, word)
        node = self._path(token)
        self._advance()
        return node

    def _list(self, opening: _Token) -> _List:
        self._advance()
        self._enter(opening)
        items: list[_Node] = []
        if self._peek().kind != "]":
            items.append(self._or())
            while self._peek().kind == ",":
                self._advance()
                items.append(self._or())
        self._expect("]", "',' or ']'")
        self.depth -= 1
        return _List(tuple(items), opening.pos)

    def _call(self, token: _Token, name: str) -> _Now:
        if name != "now":
            raise _Problem(f"unknown function {name!r} at position {token.pos}; the only function is now()", token.pos)
        self._advance()
        self._expect("(", "'(' after now")
        self._expect(")", "')'", ": now() takes no arguments")
        return _Now(token.pos)

    def _path(self, token: _Token) -> _Path:
        segments = token.value
        root = self.roots.get(segments[0])
        if root is None:
            allowed = ", ".join(self.roots)
            raise _Problem(
                f"unknown attribute root {segments[0]!r} at position {token.pos}; expected one of {allowed}", token.pos
            )
        if len(segments) == 1:
            end = token.pos + len(segments[0])
            raise _Problem(f"expected '.' and an attribute name after {segments[0]!r} at position {end}", end)
        return _Path(root, segments[1:], token.pos)


def _require_boolean(node: _Node) -> None:
    """Refuses, at save time, an operand of and/or/not (or a whole condition) that can never be true or false."""
    if isinstance(node, _Lit) and isinstance(node.value, bool):
        return
    found = {_Lit: "a literal", _List: "a list", _Now: "a timestamp", _Arith: "arithmetic"}.get(type(node))
    if found is not None:
        raise _Problem(f"expected a comparison or true/false at position {node.pos}, found {found}", node.pos)


def _roots_for(resource_type: str) -> dict[str, str]:
    """Returns every name a path may start with, mapped to the canonical root it stands for."""
    roots = {"subject": "subject", "resource": "resource", "context": "context", "user": "subject"}
    # The fixed names win: a policy on "user" resources must write resource.x, since user.x is the subject.
    if resource_type and resource_type not in roots and _IDENT.fullmatch(resource_type):
        roots[resource_type] = "resource"
    return roots


def _compile_item(item: object, index: int, roots: Mapping[str, str]) -> Condition:
    """Returns the Condition for one item of the conditions list."""
    if isinstance(item, str):
        try:
            node = _Parser(item, roots).expression()
        except _Problem as problem:
            raise ConditionError(problem.message, index=index, position=problem.position, text=item) from None
        return _condition(node)
    if isinstance(item, Mapping):
        if not item:
            raise ConditionError("expected at least one attribute in a condition object, found {}", index=index)
        if len(item) > MAX_CONDITIONS:
            raise ConditionError(
                f"expected at most {MAX_CONDITIONS} attributes in a condition object, found {len(item)}", index=index
            )
        nodes = tuple(_entry(key, value, index, roots) for key, value in item.items())
        return _condition(nodes[0] if len(nodes) == 1 else _Bool("and", nodes, 0))
    raise ConditionError(f"expected a string or an object, found {type(item).__name__}", index=index)


def _entry(key: object, value: object, index: int, roots: Mapping[str, str]) -> _Compare:
    """Returns the comparison one dict-form entry stands for: `key <op> ...`, `key == literal` or `key in [...]`."""
    if not isinstance(key, str):
        raise ConditionError(f"expected an attribute path as key, found {type(key).__name__}", index=index)
    try:
        left = _Parser(key, roots, "key").key()
    except _Problem as problem:
        raise ConditionError(problem.message, index=index, key=key, position=problem.position, text=key) from None
    if isinstance(value, str) and _LEADING_OPERATOR.match(value):
        try:
            # Only the operator and one operand come from the value, so an entry is always one comparison:
            # "== 1 or true" is refused rather than widening what the key's entry allows.
            return _Parser(value, roots, "value").tail(left)
        except _Problem as problem:
            raise ConditionError(problem.message, index=index, key=key, position=problem.position, text=value) from None
    try:
        if isinstance(value, (list, tuple)):
            items = tuple(_json_literal(element) for element in value)
            return _Compare("in", left, _List(items, 0), left.pos)
        return _Compare("==", left, _json_literal(value), left.pos)
    except _Problem as problem:
        raise ConditionError(problem.message, index=index, key=key) from None


def _json_literal(value: object) -> _Lit:
    """Returns the literal node of a JSON scalar from the dict form."""
    if value is None or isinstance(value, bool):
        return _Lit(value, {None: "null", True: "true", False: "false"}[value], 0)
    if isinstance(value, int):
        return _Lit(value, str(value), 0)
    if isinstance(value, float):
        if not isfinite(value):
            raise _Problem("expected a finite number, found " + repr(value), 0)
        text = repr(value)
        # Exponent notation does not parse back; plain digits keep `source` valid condition text.
        return _Lit(value, format(Decimal(text), "f") if "e" in text else text, 0)
    if isinstance(value, str):
        return _Lit(value, _quote(value), 0)
    if isinstance(value, Mapping):
        raise _Problem("expected a literal, a list or a comparison such as '> 5', found an object", 0)
    raise _Problem(f"expected a string, number, true, false, null or a list of them, found {type(value).__name__}", 0)


def _condition(node: _Node) -> Condition:
    return Condition(_render(node), any(p.root == "resource" for p in _paths(node)), _compile(node))


def _paths(node: _Node) -> Iterator[_Path]:
    """Yields every attribute path in the tree."""
    if isinstance(node, _Path):
        yield node
    elif isinstance(node, _List):
        for item in node.items:
            yield from _paths(item)
    elif isinstance(node, _Not):
        yield from _paths(node.operand)
    elif isinstance(node, _Bool):
        for operand in node.operands:
            yield from _paths(operand)
    elif isinstance(node, _Compare):
        yield from _paths(node.left)
        yield from _paths(node.right)
    elif isinstance(node, _Arith):
        yield from _paths(node.first)
        for _, operand in node.rest:
            yield from _paths(operand)


# --- Canonical text ----------------------------------------------------------------------------------------


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\t", "\\t")
    return f"'{escaped}'"


def _precedence(node: _Node) -> int:
    if isinstance(node, _Bool):
        return 1 if node.op == "or" else 2
    return {_Not: 3, _Compare: 4, _Arith: 5}.get(type(node), 6)


def _render(node: _Node, least: int = 0) -> str:
    """Returns the canonical text of `node`, parenthesised when it binds looser than `least`."""
    level = _precedence(node)
    if isinstance(node, _Lit):
        text = node.text
    elif isinstance(node, _Path):
        text = ".".join((node.root, *node.segments))
    elif isinstance(node, _Now):
        text = "now()"
    elif isinstance(node, _List):
        text = "[" + ", ".join(_render(item) for item in node.items) + "]"
    elif isinstance(node, _Not):
        text = "not " + _render(node.operand, level)
    elif isinstance(node, _Bool):
        text = f" {node.op} ".join(_render(operand, level + 1) for operand in node.operands)
    elif isinstance(node, _Compare):
        text = f"{_render(node.left, 5)} {node.op} {_render(node.right, 5)}"
    else:
        # Left-associative: only a right operand that is itself arithmetic needs parentheses (a - (b - c)).
        text = _render(node.first, 5) + "".join(f" {op} {_render(operand, 6)}" for op, operand in node.rest)
    return f"({text})" if level < least else text


# --- Evaluation --------------------------------------------------------------------------------------------
# Every node compiles once to a closure taking (subject, resource, context); `holds` only calls the root one.

_SEQUENCES = (list, tuple)
_COLLECTIONS = (list, tuple, set, frozenset)


def _compile(node: _Node) -> _Evaluator:
    if isinstance(node, _Lit):
        value = node.value
        return lambda s, r, c: value
    if isinstance(node, _Path):
        return _compile_path(node)
    if isinstance(node, _Now):
        return _now
    if isinstance(node, _List):
        return _compile_list(node)
    if isinstance(node, _Not):
        return _compile_not(node)
    if isinstance(node, _Bool):
        return _compile_bool(node)
    if isinstance(node, _Compare):
        return _compile_compare(node)
    return _compile_arith(node)


def _constant(node: _Node) -> tuple[bool, Any]:
    """Returns (True, value) for a literal or a list of literals, whose value is known when the policy is saved."""
    if isinstance(node, _Lit):
        return True, node.value
    if isinstance(node, _List):
        literals = [item for item in node.items if isinstance(item, _Lit)]
        if len(literals) == len(node.items):
            return True, tuple(item.value for item in literals)
    return False, None


def _is_mapping(value: object) -> TypeGuard[Mapping[str, Any]]:
    # isinstance against the Mapping ABC is slow; attribute bags are nearly always plain dicts.
    return type(value) is dict or isinstance(value, Mapping)


def _compile_path(node: _Path) -> _Evaluator:
    index, segments = ROOTS.index(node.root), node.segments

    def lookup(s: Any, r: Any, c: Any) -> Any:
        value = s if index == 0 else r if index == 1 else c
        try:
            for segment in segments:
                if type(value) is not dict and not isinstance(value, Mapping):  # _is_mapping, inlined: hot path
                    raise KeyError(segment)
                value = value[segment]
        except KeyError:
            # Never a silent None: a policy must not pass or fail because an attribute was forgotten.
            raise EvaluationError(_why_missing(node, (s, r, c)[index])) from None
        return value

    return lookup


def _why_missing(node: _Path, value: object) -> str:
    """Returns why `node` could not be looked up in `value` (its root); only called on the failure path."""
    dotted = _render(node)
    if value is None:
        return f"{dotted} cannot be evaluated: there is no {node.root}"
    if not _is_mapping(value):
        return f"{dotted} cannot be evaluated: {node.root} is {_a(_kind(value))}, not an object"
    for depth, segment in enumerate(node.segments):
        if not _is_mapping(value):
            parent = ".".join((node.root, *node.segments[:depth]))
            return f"{dotted} is missing: {parent} is {_a(_kind(value))}, not an object"
        if segment not in value:
            break
        value = value[segment]
    return f"{dotted} is missing"


def _now(s: Any, r: Any, c: Any) -> datetime:
    # context["now"] lets a request (and a test) pin the clock; otherwise the current UTC time.
    value = c.get("now") if _is_mapping(c) else None
    if value is None:
        return datetime.now(UTC)
    if isinstance(value, (datetime, str)):
        return _as_datetime(value)
    raise EvaluationError(f"context.now is {_a(_kind(value))}, not a timestamp")


def _compile_list(node: _List) -> _Evaluator:
    known, constant = _constant(node)
    if known:
        return lambda s, r, c: constant
    items = tuple(_compile(item) for item in node.items)
    return lambda s, r, c: tuple(item(s, r, c) for item in items)


def _not_boolean(op: str, operand: str, value: object) -> EvaluationError:
    return EvaluationError(f"'{op}' needs true or false, but {operand} is {_a(_kind(value))}")


def _compile_not(node: _Not) -> _Evaluator:
    operand, source = _compile(node.operand), _render(node.operand)

    def negate(s: Any, r: Any, c: Any) -> bool:
        value = operand(s, r, c)
        if value is True or value is False:
            return not value
        raise _not_boolean("not", source, value)

    return negate


def _compile_bool(node: _Bool) -> _Evaluator:
    operands = tuple((_compile(operand), _render(operand)) for operand in node.operands)
    op = node.op
    decisive = op == "or"  # the operand value that decides the whole: true for or, false for and

    def decide(s: Any, r: Any, c: Any) -> bool:
        for operand, source in operands:
            value = operand(s, r, c)
            if value is decisive:
                return decisive
            if value is not (not decisive):
                raise _not_boolean(op, source, value)
        return not decisive

    return decide


def _compile_arith(node: _Arith) -> _Evaluator:
    first = _compile(node.first)
    if len(node.rest) == 1:
        # The common shape, e.g. now() + 24h: one step, no loop.
        ((op, right_node),) = node.rest
        known, constant = _constant(right_node)
        if known:
            return lambda s, r, c: _arithmetic(op, first(s, r, c), constant)
        right = _compile(right_node)
        return lambda s, r, c: _arithmetic(op, first(s, r, c), right(s, r, c))
    rest = tuple((op, _compile(operand)) for op, operand in node.rest)

    def compute(s: Any, r: Any, c: Any) -> Any:
        value = first(s, r, c)
        for op, operand in rest:
            value = _arithmetic(op, value, operand(s, r, c))
        return value

    return compute


def _compile_compare(node: _Compare) -> _Evaluator:
    left, right = _compile(node.left), _compile(node.right)
    if node.op in ("==", "!=", "in", "not in") and _is_role(node.left):
        return _role_compare(node.op, left, node.right)
    if node.op in ("==", "!=") and _is_role(node.right):
        return _role_compare(node.op, right, node.left)  # equality is symmetric
    test = _COMPARISONS[node.op]
    known, constant = _constant(node.right)
    if not known:
        return lambda s, r, c: test(left(s, r, c), right(s, r, c))
    names = _string_set(constant)
    if node.op in ("in", "not in") and names is not None:
        # A literal list of strings, the usual allow-list: a set lookup instead of a scan.
        negate = node.op == "not in"
        return lambda s, r, c: (
            (value in names) is not negate if type(value := left(s, r, c)) is str else test(value, constant)
        )
    return lambda s, r, c: test(left(s, r, c), constant)


def _string_set(value: object) -> frozenset[str] | None:
    """Returns a literal list of strings as a set, or None for anything else."""
    if type(value) is tuple and all(type(item) is str for item in value):
        return frozenset(value)
    return None


def _is_role(node: _Node) -> bool:
    return isinstance(node, _Path) and node.root == "subject" and node.segments == ("role",)


def _role_compare(op: str, role: _Evaluator, other_node: _Node) -> _Evaluator:
    """Returns `subject.role <op> other`, where a subject with `roles` has a role when any of them matches."""
    test, other = _COMPARISONS[op], _compile(other_node)
    negate = op in ("!=", "not in")
    membership = op in ("in", "not in")
    known, constant = _constant(other_node)
    names = _string_set(constant) if known and membership else None

    def has_role(roles: Any, value: Any) -> bool:
        if names is not None:
            return not names.isdisjoint(roles)
        if membership:
            return any(_member(name, value, "in") for name in roles)
        if type(value) is str:
            return value in roles  # role names are strings: plain equality is the language's equality here
        return any(_equal(name, value) for name in roles)

    def compare(s: Any, r: Any, c: Any) -> bool:
        roles = s.get("roles", _ABSENT) if _is_mapping(s) else _ABSENT
        if roles is _ABSENT:
            return test(role(s, r, c), other(s, r, c))  # a single plain `role` attribute
        if not isinstance(roles, _COLLECTIONS):
            raise EvaluationError(f"subject.roles is {_a(_kind(roles))}, not a list")
        return has_role(roles, constant if known else other(s, r, c)) is not negate

    return compare


_ABSENT = object()


def _is_number(value: object) -> bool:
    # bool is an int to Python but not a number here: true + 1 and true < 2 are type errors.
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def _as_datetime(value: object) -> datetime:
    """Returns `value` as an aware datetime (naive means UTC); a string is parsed as RFC 3339 / ISO 8601."""
    if isinstance(value, datetime):
        return value if value.utcoffset() is not None else value.replace(tzinfo=UTC)
    if not isinstance(value, str):
        raise EvaluationError(f"expected a timestamp, found {_a(_kind(value))}")
    text = value.strip()
    if text[-1:] == "z":
        text = text[:-1] + "Z"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        # The value itself stays out of the message: it may be an attribute the subject may not see.
        raise EvaluationError("a string is not a timestamp (expected RFC 3339, e.g. 2025-01-31T09:00:00Z)") from None
    return parsed if parsed.utcoffset() is not None else parsed.replace(tzinfo=UTC)


def _equal(a: object, b: object) -> bool:
    """Returns a == b in the language: values of different types are unequal, except timestamp and string."""
    kind = type(a)
    if kind is type(b) and kind in (str, int, float, bool, type(None), timedelta):
        return a == b  # the common case first
    if isinstance(a, datetime) or isinstance(b, datetime):
        if isinstance(a, (datetime, str)) and isinstance(b, (datetime, str)):
            return _as_datetime(a) == _as_datetime(b)
        return False
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return False
    if _is_number(a) and _is_number(b):
        return a == b
    if isinstance(a, _SEQUENCES) and isinstance(b, _SEQUENCES):
        # A list literal evaluates to a tuple; attributes may be lists: both are lists here.
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a == b
    if isinstance(a, (set, frozenset)) and isinstance(b, (set, frozenset)):
        return a == b
    return kind is type(b) and a == b


def _member(item: object, container: object, op: str) -> bool:
    """Returns whether `item` is in `container` (a list or a string)."""
    if isinstance(container, str):
        if isinstance(item, str):
            return item in container
        raise EvaluationError(f"'{op}' with a string needs a string on the other side, found {_a(_kind(item))}")
    if isinstance(container, _COLLECTIONS):
        return any(_equal(item, element) for element in container)
    side = "left" if op == "contains" else "right"
    raise EvaluationError(f"'{op}' needs a list or a string on the {side}, found {_a(_kind(container))}")


def _ordering(op: str, compare: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def order(a: Any, b: Any) -> bool:
        kind = type(a)
        if kind is type(b) and kind in _ORDERED:
            return compare(a, b)  # the common cases first
        if kind is datetime and type(b) is datetime:
            return compare(_as_datetime(a), _as_datetime(b))
        if (
            (_is_number(a) and _is_number(b))
            or (isinstance(a, str) and isinstance(b, str))
            or (isinstance(a, timedelta) and isinstance(b, timedelta))
        ):
            return compare(a, b)
        if (
            (isinstance(a, datetime) or isinstance(b, datetime))
            and isinstance(a, (datetime, str))
            and isinstance(b, (datetime, str))
        ):
            return compare(_as_datetime(a), _as_datetime(b))
        raise EvaluationError(f"cannot compare {_a(_kind(a))} with {_a(_kind(b))} using '{op}'")

    return order


_ORDERED = frozenset({int, float, str, timedelta})

_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "==": _equal,
    "!=": lambda a, b: not _equal(a, b),
    "<": _ordering("<", operator.lt),
    "<=": _ordering("<=", operator.le),
    ">": _ordering(">", operator.gt),
    ">=": _ordering(">=", operator.ge),
    "in": lambda a, b: _member(a, b, "in"),
    "not in": lambda a, b: not _member(a, b, "not in"),
    "contains": lambda a, b: _member(b, a, "contains"),
}


def _arithmetic(op: str, a: Any, b: Any) -> Any:
    """Returns a + b or a - b for numbers, durations, and timestamps with durations; else EvaluationError."""
    plus = op == "+"
    try:
        if type(b) is timedelta and type(a) is datetime:  # the common case first: now() + 24h
            start = a if a.utcoffset() is not None else a.replace(tzinfo=UTC)
            return start + b if plus else start - b
        if (_is_number(a) and _is_number(b)) or (isinstance(a, timedelta) and isinstance(b, timedelta)):
            return a + b if plus else a - b
        # A timestamp attribute is often an RFC 3339 string (JSON has no timestamps): it takes part as one.
        if isinstance(b, timedelta) and isinstance(a, (datetime, str)):
            start = _as_datetime(a)
            return start + b if plus else start - b
        if plus and isinstance(a, timedelta) and isinstance(b, (datetime, str)):
            return _as_datetime(b) + a
        if (
            not plus
            and (isinstance(a, datetime) or isinstance(b, datetime))
            and isinstance(a, (datetime, str))
            and isinstance(b, (datetime, str))
        ):
            return _as_datetime(a) - _as_datetime(b)
    except (TypeError, ArithmeticError) as exc:
        # A Decimal meeting a float, or a timestamp pushed past year 9999.
        raise EvaluationError(f"cannot compute {_a(_kind(a))} {op} {_a(_kind(b))}: {exc}") from None
    raise EvaluationError(f"cannot compute {_a(_kind(a))} {op} {_a(_kind(b))}")


def _kind(value: object) -> str:
    """Returns the language's name for the type of `value`, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if _is_number(value):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, datetime):
        return "timestamp"
    if isinstance(value, timedelta):
        return "duration"
    if isinstance(value, _COLLECTIONS):
        return "list"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _a(kind: str) -> str:
    return kind if kind == "null" else ("an " if kind[0] in "aeiou" else "a ") + kind
