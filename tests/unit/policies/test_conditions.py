"""The ABAC condition language, decided from tables of cases: parsing, errors with positions, evaluation."""

from __future__ import annotations

import ast
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from policies import conditions as conditions_module
from policies.conditions import Condition, ConditionError, EvaluationError, compile_conditions

NOW = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)

SUBJECT = {
    "id": "usr_1",
    "tenant_id": "ten_a",
    "roles": ["member", "PremiumCustomer"],
    "age": 30,
    "verified": True,
    "tags": ["vip", "beta"],
    "profile": {"tier": "gold", "address": {"country": "NL"}},
}
RESOURCE = {
    "id": "bkg_1",
    "owner_id": "usr_1",
    "status": "confirmed",
    "price": 120.5,
    "seats": 3,
    "scheduled_time": "2025-06-02T12:00:00Z",  # 27 hours after NOW, as JSON carries it
    "starts_at": NOW + timedelta(hours=2),  # as a loaded row carries it
    "labels": ["outdoor"],
    "cancelled_at": None,
    "meta": {"source": {"channel": "web"}},
}
CONTEXT = {"now": NOW, "ip": "10.0.0.7", "mode": "maintenance"}


def one(condition, resource_type="booking"):
    (compiled,) = compile_conditions([condition], resource_type)
    return compiled


def holds(condition, subject=SUBJECT, resource=RESOURCE, context=CONTEXT):
    return one(condition).holds(subject, resource, context)


# --- The seed's mapping form -------------------------------------------------------------------------------

SEED = {"user.role": "PremiumCustomer", "booking.scheduled_time": "> now() + 24h"}

SEED_CASES = [
    # roles, resource, expected
    (["PremiumCustomer"], {"scheduled_time": NOW + timedelta(hours=25)}, True),
    (["PremiumCustomer"], {"scheduled_time": NOW + timedelta(hours=23)}, False),
    (["PremiumCustomer"], {"scheduled_time": (NOW + timedelta(hours=25)).isoformat()}, True),
    (["PremiumCustomer"], {"scheduled_time": "2025-06-02T10:00:00Z"}, True),
    (["PremiumCustomer"], {"scheduled_time": "2025-06-02T08:00:00Z"}, False),
    (["PremiumCustomer"], {"scheduled_time": "2025-06-02T11:00:00+02:00"}, False),  # 09:00Z: exactly 24h, not >
    (["Basic"], {"scheduled_time": NOW + timedelta(hours=25)}, False),
    (["Basic", "PremiumCustomer"], {"scheduled_time": NOW + timedelta(hours=25)}, True),
]


@pytest.mark.parametrize(("roles", "resource", "expected"), SEED_CASES)
def test_seed_mapping(roles, resource, expected):
    assert one(SEED).holds({"roles": roles}, resource, {"now": NOW}) is expected


def test_seed_mapping_without_the_attribute_cannot_be_decided():
    with pytest.raises(EvaluationError, match=r"resource\.scheduled_time is missing"):
        one(SEED).holds({"roles": ["PremiumCustomer"]}, {}, {"now": NOW})


def test_seed_mapping_is_one_condition_that_reads_the_resource():
    compiled = compile_conditions([SEED], "booking")
    assert len(compiled) == 1
    assert compiled[0].references_resource
    assert compiled[0].source == "subject.role == 'PremiumCustomer' and resource.scheduled_time > now() + 24h"


# --- String conditions -------------------------------------------------------------------------------------

STRING_CASES = [
    # condition, expected (against SUBJECT, RESOURCE, CONTEXT)
    ("subject.role == 'member'", True),
    ("user.role == 'admin'", False),
    ("subject.role != 'admin'", True),
    ("subject.role in ['admin', 'PremiumCustomer']", True),
    ("subject.role not in ['admin', 'owner']", True),
    ("'member' == subject.role", True),
    ("resource.owner_id == subject.id", True),
    ("booking.owner_id == user.id and booking.status == 'confirmed'", True),
    ("resource.status == 'cancelled' or subject.age >= 18", True),
    ("resource.status == 'cancelled' or subject.age < 18", False),
    ("not resource.status == 'cancelled'", True),
    ("not (resource.seats > 2 and resource.price < 100)", True),
    ("resource.seats > 2 and (resource.price < 100 or subject.verified)", True),
    ("resource.seats > 2 and resource.price < 100 or subject.verified", True),
    ("resource.seats > 5 and (resource.price < 100 or subject.verified)", False),
    ("not not true", True),
    ("true", True),
    ("false or false", False),
    ("subject.verified", True),
    ("subject.verified == true", True),
    ("subject.verified == 1", False),  # a boolean is not a number
    ("subject.age == '30'", False),  # nor is a string
    ("resource.cancelled_at == null", True),
    ("resource.cancelled_at != null", False),
    ("resource.price >= 120.5", True),
    ("resource.price - 20 < 100.5", False),
    ("resource.seats + 2 == 5", True),
    ("resource.seats == 3.0", True),
    ("resource.seats > -3", True),
    ("subject.id == -1", False),
    ("resource.labels contains 'outdoor'", True),
    ("subject.tags contains 'alpha'", False),
    ("'vip' in subject.tags", True),
    ("resource.labels == ['outdoor']", True),
    ("subject.age in [18, subject.age]", True),
    ("context.ip in ['10.0.0.7', '10.0.0.8']", True),
    ("context.ip not in ['10.0.0.7', '10.0.0.8']", False),
    ("subject.age in ['30', 'x']", False),  # a number is never a string
    ("subject.age not in ['30', 'x']", True),
    ("resource.starts_at in ['2025-06-01T13:00:00+02:00']", True),  # timestamps still meet strings
    ("resource.starts_at in ['2025-06-01T11:00:00Z', 'x']", True),  # found before 'x' (no timestamp) is reached
    ("'10.0.' in context.ip", True),
    ("context.ip contains '10.0.'", True),
    ("context.mode != 'maintenance'", False),
    ("resource.status == 'confirmed' and not (context.mode == 'maintenance')", False),
    ("subject.profile.tier == 'gold'", True),
    ("subject.profile.address.country in ['NL', 'BE']", True),
    ('resource.meta.source.channel == "web"', True),
    ("'it\\'s' == \"it's\"", True),
    ("'a\\tb' != 'a\\nb'", True),
    ("resource.scheduled_time > now() + 24h", True),
    ("resource.scheduled_time > now() + 1d + 3h", False),
    ("resource.scheduled_time >= now() + 1d + 3h", True),
    ("resource.scheduled_time - 2d < now()", True),
    ("resource.starts_at < now() + 90m", False),
    ("resource.starts_at <= now() + 2h", True),
    ("resource.starts_at - now() == 2h", True),
    ("resource.starts_at == '2025-06-01T11:00:00Z'", True),
    ("resource.starts_at == '2025-06-01T13:00:00+02:00'", True),
    ("resource.starts_at == 5", False),
    ("now() + 90m == now() + 1.5h", True),
    ("now() == '2025-06-01T09:00:00Z'", True),
    ("now() < '2025-06-01T09:00:01'", True),  # naive means UTC
    ("24h == 1d and 1w == 7d and 500ms < 1s and 30m + 30m == 1h", True),
    ("-1h < 0s", True),
    # and/or short-circuit: the missing attribute is never looked up.
    ("resource.status == 'confirmed' or resource.missing == 1", True),
    ("resource.status == 'cancelled' and resource.missing == 1", False),
]


@pytest.mark.parametrize(("condition", "expected"), STRING_CASES)
def test_string_conditions(condition, expected):
    assert holds(condition) is expected


ROLE_CASES = [
    # subject, condition, expected
    ({"roles": ["PremiumCustomer"]}, "user.role == 'PremiumCustomer'", True),
    ({"roles": ["Basic"]}, "user.role == 'PremiumCustomer'", False),
    ({"roles": []}, "subject.role != 'admin'", True),
    ({"roles": ("owner",)}, "subject.role != 'owner'", False),
    ({"roles": ["member"]}, "subject.role in ['admin', 'owner']", False),
    ({"roles": ["member"]}, "subject.role not in ['admin', 'owner']", True),
    ({"roles": ["member"], "allowed": ["member"]}, "subject.role in subject.allowed", True),
    ({"roles": ["member"], "allowed": "members only"}, "subject.role in subject.allowed", True),
    ({"roles": ["member"], "allowed": []}, "subject.role not in subject.allowed", True),
    ({"roles": ["member"], "role": "admin"}, "subject.role == 'admin'", False),  # roles, when present, decide
    ({"role": "admin"}, "subject.role == 'admin'", True),  # a plain role compares normally
    ({"role": "admin"}, "subject.role in ['admin', 'owner']", True),
    ({"role": "admin"}, "subject.role < 'b'", True),
]


@pytest.mark.parametrize(("subject", "condition", "expected"), ROLE_CASES)
def test_roles(subject, condition, expected):
    assert holds(condition, subject=subject) is expected


NOW_CASES = [
    # context, condition, expected
    ({"now": NOW}, "now() == '2025-06-01T09:00:00Z'", True),
    ({"now": datetime(2025, 6, 1, 9, 0)}, "now() == '2025-06-01T09:00:00Z'", True),  # naive means UTC
    (
        {"now": datetime(2025, 6, 1, 11, 0, tzinfo=timezone(timedelta(hours=2)))},
        "now() == '2025-06-01T09:00:00Z'",
        True,
    ),
    ({"now": "2025-06-01T09:00:00Z"}, "now() + 1h == '2025-06-01T10:00:00+00:00'", True),
    ({}, "now() > '2025-01-01T00:00:00Z' and now() < '2200-01-01T00:00:00Z'", True),
    ({"now": None}, "now() > '2025-01-01T00:00:00Z'", True),
]


@pytest.mark.parametrize(("context", "condition", "expected"), NOW_CASES)
def test_now_honours_the_context_clock(context, condition, expected):
    assert holds(condition, context=context) is expected


MAPPING_CASES = [
    # mapping, expected (against SUBJECT, RESOURCE, CONTEXT)
    ({"user.role": "member"}, True),
    ({"user.role": ["admin", "member"]}, True),
    ({"user.role": "in ['admin', 'owner']"}, False),
    ({"user.role": "not in ['admin', 'owner']"}, True),
    ({"user.tags": "contains 'vip'"}, True),
    ({"booking.seats": 3, "booking.price": 120.5}, True),
    ({"booking.seats": ">= 4"}, False),
    ({"booking.seats": "  != 4"}, True),
    ({"user.verified": True}, True),
    ({"user.verified": 1}, False),
    ({"booking.cancelled_at": None}, True),
    ({"context.mode": "maintenance"}, True),
    ({"context.mode": "inmaintenance"}, False),  # no space after "in": a plain string, not a comparison
    ({"booking.scheduled_time": "> now() + 1d"}, True),
]


@pytest.mark.parametrize(("mapping", "expected"), MAPPING_CASES)
def test_mapping_form(mapping, expected):
    assert holds(mapping) is expected


# --- Canonical source --------------------------------------------------------------------------------------

SOURCE_CASES = [
    # condition, resource type, canonical source
    (SEED, "booking", "subject.role == 'PremiumCustomer' and resource.scheduled_time > now() + 24h"),
    ("user.role=='a'", "booking", "subject.role == 'a'"),
    ("  booking.x   in[1,2.50,  -3,true,null] ", "booking", "resource.x in [1, 2.50, -3, true, null]"),
    (
        "(subject.a == 1 and subject.b == 2) or context.x == 3",
        "booking",
        "subject.a == 1 and subject.b == 2 or context.x == 3",
    ),
    (
        "subject.a == 1 and (subject.b == 2 or subject.c == 3)",
        "booking",
        "subject.a == 1 and (subject.b == 2 or subject.c == 3)",
    ),
    ("(subject.a and subject.b) and subject.c", "booking", "subject.a and subject.b and subject.c"),
    ("not (subject.a == 1)", "booking", "not subject.a == 1"),
    ("not (subject.a == 1 or subject.b)", "booking", "not (subject.a == 1 or subject.b)"),
    ("(subject.a == 1) == true", "booking", "(subject.a == 1) == true"),
    ('subject.name == "it\'s"', "booking", "subject.name == 'it\\'s'"),
    ("subject.a - (1 - 2) == 3", "booking", "subject.a - (1 - 2) == 3"),
    ("(subject.a - 1) - 2 == 3", "booking", "subject.a - 1 - 2 == 3"),
    ("now( ) - 1.5h < resource.t", "booking", "now() - 1.5h < resource.t"),
    ("subject.a not  in ['x']", "booking", "subject.a not in ['x']"),
    ("order.total > 10", "order", "resource.total > 10"),
    ("user.id == resource.owner", "user", "subject.id == resource.owner"),
    ({"user.tier": ["gold", "silver"]}, "booking", "subject.tier in ['gold', 'silver']"),
    (
        {"booking.paid": True, "booking.price": 10, "booking.note": None},
        "booking",
        "resource.paid == true and resource.price == 10 and resource.note == null",
    ),
    (
        {"booking.price": 1e20, "booking.ratio": 0.25},
        "booking",
        "resource.price == 100000000000000000000 and resource.ratio == 0.25",
    ),
    ({"context.mode": "not in ['x', \"y\"]"}, "booking", "context.mode not in ['x', 'y']"),
    ({"user.note": "line\nbreak"}, "booking", "subject.note == 'line\\nbreak'"),
]


@pytest.mark.parametrize(("condition", "resource_type", "source"), SOURCE_CASES)
def test_canonical_source(condition, resource_type, source):
    assert one(condition, resource_type).source == source
    # The canonical text is itself a condition, and its own canonical form.
    assert one(source, resource_type).source == source


REFERENCE_CASES = [
    ("subject.a == 1", False),
    ("context.ip == subject.ip", False),
    ("resource.x == 1", True),
    ("booking.x == 1", True),
    ("subject.a == 1 or [resource.x] == [1]", True),
    ({"user.role": "admin"}, False),
    ({"user.role": "admin", "booking.x": 1}, True),
]


@pytest.mark.parametrize(("condition", "references_resource"), REFERENCE_CASES)
def test_references_resource(condition, references_resource):
    assert one(condition).references_resource is references_resource


# --- Errors when a policy is saved -------------------------------------------------------------------------

DEEP_PARENS = "(" * 33 + "true" + ")" * 33
DEEP_NOTS = "not " * 33 + "true"
LONG = "subject.a == '" + "x" * 2000 + "'"

SYNTAX_ERRORS = [
    # condition, position, part of the message
    ("subject.role ==", 15, "expected an operand at position 15"),
    ("foo.bar == 1", 0, "unknown attribute root 'foo'"),
    ("subject.x == 'abc", 13, "unterminated string"),
    ("now(1)", 4, "now() takes no arguments"),
    ("subject.a == 1 1", 15, "expected an operator or the end of the condition"),
    ("__import__('os')", 0, "'__import__'"),
    ("subject.a.__class__ == 1", 10, "'__class__'"),
    ("open('x') == 1", 0, "unknown function 'open'"),
    ("subject.a == now", 16, "expected '(' after now"),
    ("", 0, "expected an operand at position 0"),
    ("subject", 7, "expected '.' and an attribute name"),
    ("subject.a == 1 and", 18, "expected an operand"),
    ("subject.a == 1 and and", 19, "found 'and'"),
    ("(subject.a == 1", 15, "expected ')'"),
    ("subject.a in [1, 2", 18, "expected ',' or ']'"),
    ("subject.a == )", 13, "expected an operand"),
    ("subject.a = 1", 10, "use '=='"),
    ("subject.a == $", 13, "unexpected character '$'"),
    ("subject.a == 'a\\q'", 15, "unknown escape"),
    ("subject.a < 1 < 2", 14, "expected an operator or the end"),
    ("subject.a == 5x", 14, "unknown duration unit 'x'"),
    ("subject.a == 5 min", 15, "expected an operator or the end"),
    ("subject.a > 99999999999w", 12, "duration out of range"),
    ("subject.a == 1.", 14, "unexpected character '.'"),
    ("subject. a == 1", 8, "expected an attribute name after '.'"),
    ("subject.a not 1", 14, "expected 'in' after 'not'"),
    ("subject.a == 1 AND subject.b == 2", 15, "found 'AND'"),  # keywords are lowercase
    ("Subject.a == 1", 0, "unknown attribute root 'Subject'"),
    ("subject.a == - subject.b", 15, "expected a number or duration after '-'"),
    ("subject.a + 1", 0, "expected a comparison or true/false"),
    ("1", 0, "found a literal"),
    ("subject.a == 1 and 5h", 19, "found a literal"),
    ("not now()", 4, "found a timestamp"),
    ("subject.a or [1]", 13, "found a list"),
    (DEEP_PARENS, 32, "nesting deeper than 32"),
    (DEEP_NOTS, 128, "nesting deeper than 32"),
    ("[" * 33 + "]" * 33 + " == 1", 32, "nesting deeper than 32"),
    (LONG, 2000, "expected at most 2000 characters"),
]


@pytest.mark.parametrize(("condition", "position", "message"), SYNTAX_ERRORS)
def test_syntax_errors_name_the_position(condition, position, message):
    with pytest.raises(ConditionError) as caught:
        compile_conditions(["true", condition], "booking")
    error = caught.value
    assert message in error.message
    assert (error.index, error.key, error.position, error.text) == (1, None, position, condition)
    if "2000" not in message:
        assert f"position {position}" in error.message


@pytest.mark.parametrize("condition", ["(" * 32 + "true" + ")" * 32, "not " * 32 + "true", "[[[[1]]]] == [[[[1]]]]"])
def test_nesting_up_to_the_limit_is_fine(condition):
    assert one(condition).holds({}, None, {}) is True


MAPPING_ERRORS = [
    # mapping, key, position, text, part of the message
    ({}, None, 0, "", "at least one attribute"),
    ({"user.role": {"eq": 1}}, "user.role", 0, "", "found an object"),
    ({"user.role": [["a"]]}, "user.role", 0, "", "found list"),
    ({"user.x": float("nan")}, "user.x", 0, "", "finite"),
    ({"foo.role": "x"}, "foo.role", 0, "foo.role", "unknown attribute root 'foo'"),
    ({"user": "x"}, "user", 4, "user", "expected '.' and an attribute name"),
    ({"user.__dict__": 1}, "user.__dict__", 5, "user.__dict__", "'__dict__'"),
    ({"user.role == 1": 1}, "user.role == 1", 10, "user.role == 1", "expected the end of the key"),
    ({"user.role": "== "}, "user.role", 3, "== ", "expected an operand"),
    ({"user.role": "in ['a',"}, "user.role", 8, "in ['a',", "expected an operand"),
    ({"user.role": "> 1 or true"}, "user.role", 4, "> 1 or true", "expected the end of the value"),
    ({"context.mode": "in maintenance"}, "context.mode", 3, "in maintenance", "unknown attribute root"),
    ({"booking.status": "> now"}, "booking.status", 5, "> now", "expected '(' after now"),
]


@pytest.mark.parametrize(("mapping", "key", "position", "text", "message"), MAPPING_ERRORS)
def test_mapping_errors_name_the_key_and_position(mapping, key, position, text, message):
    with pytest.raises(ConditionError) as caught:
        compile_conditions(["true", mapping], "booking")
    error = caught.value
    assert message in error.message
    assert (error.index, error.key, error.position, error.text) == (1, key, position, text)


LIST_ERRORS = [
    # conditions, index, part of the message
    ("subject.a == 1", 0, "must be a list"),
    ([42], 0, "expected a string or an object, found int"),
    (["true", None], 1, "found NoneType"),
    ([{1: "x"}], 0, "expected an attribute path as key"),
    (["true"] * 65, 64, "expected at most 64 conditions"),
    ([{f"user.a{i}": 1 for i in range(65)}], 0, "expected at most 64 attributes"),
]


@pytest.mark.parametrize(("conditions", "index", "message"), LIST_ERRORS)
def test_malformed_condition_lists(conditions, index, message):
    with pytest.raises(ConditionError) as caught:
        compile_conditions(conditions, "booking")
    assert caught.value.index == index
    assert message in str(caught.value)


def test_limits_and_empty_lists():
    assert compile_conditions([], "booking") == ()
    assert len(compile_conditions(["true"] * 64, "booking")) == 64


def test_error_text_names_the_item_and_key():
    with pytest.raises(ConditionError) as caught:
        compile_conditions([{"user.role": "=="}], "booking")
    assert str(caught.value).startswith("conditions[0]['user.role']: expected an operand at position 2")
    assert isinstance(caught.value, ValueError)


# --- Errors when a condition is evaluated ------------------------------------------------------------------

EVALUATION_ERRORS = [
    # condition, subject, resource, context, part of the message
    ("resource.missing == 1", SUBJECT, RESOURCE, CONTEXT, "resource.missing is missing"),
    ("subject.profile.tier.x == 1", SUBJECT, RESOURCE, CONTEXT, "subject.profile.tier is a string, not an object"),
    ("resource.id == 'x'", SUBJECT, None, CONTEXT, "there is no resource"),
    ("subject.age < 'abc'", SUBJECT, RESOURCE, CONTEXT, "cannot compare a number with a string using '<'"),
    ("subject.verified < true", SUBJECT, RESOURCE, CONTEXT, "cannot compare a boolean with a boolean"),
    ("subject.verified + 1 == 2", SUBJECT, RESOURCE, CONTEXT, "cannot compute a boolean + a number"),
    ("subject.age + 'x' == 1", SUBJECT, RESOURCE, CONTEXT, "cannot compute a number + a string"),
    ("resource.seats - 1h > 0", SUBJECT, RESOURCE, CONTEXT, "cannot compute a number - a duration"),
    ("subject.age in 5", SUBJECT, RESOURCE, CONTEXT, "'in' needs a list or a string on the right"),
    ("5 in context.ip", SUBJECT, RESOURCE, CONTEXT, "needs a string on the other side"),
    ("subject.age contains 3", SUBJECT, RESOURCE, CONTEXT, "'contains' needs a list or a string on the left"),
    ("subject.age and true", SUBJECT, RESOURCE, CONTEXT, "'and' needs true or false, but subject.age is a number"),
    ("false or subject.tags", SUBJECT, RESOURCE, CONTEXT, "'or' needs true or false"),
    ("not subject.age", SUBJECT, RESOURCE, CONTEXT, "'not' needs true or false"),
    ("subject.age", SUBJECT, RESOURCE, CONTEXT, "subject.age is a number, not true or false"),
    ("now() > 'tomorrow'", SUBJECT, RESOURCE, CONTEXT, "not a timestamp"),
    ("now() == 'tomorrow'", SUBJECT, RESOURCE, CONTEXT, "not a timestamp"),
    ("resource.scheduled_time > now()", SUBJECT, {"scheduled_time": "soon"}, CONTEXT, "not a timestamp"),
    ("resource.scheduled_time > now()", SUBJECT, {"scheduled_time": 5}, CONTEXT, "cannot compare a number"),
    ("now() < 5", SUBJECT, RESOURCE, CONTEXT, "cannot compare a timestamp with a number"),
    ("now() > '2025-01-01'", SUBJECT, RESOURCE, {"now": 5}, "context.now is a number"),
    ("now() + 1000000w > now()", SUBJECT, RESOURCE, CONTEXT, "cannot compute a timestamp + a duration"),
    ("subject.role == 'admin'", {"roles": "admin"}, RESOURCE, CONTEXT, "subject.roles is a string, not a list"),
    ("subject.role == 'admin'", {"id": "usr_1"}, RESOURCE, CONTEXT, "subject.role is missing"),
    ("context.ip == '1.2.3.4'", SUBJECT, RESOURCE, None, "there is no context"),
    ("subject.id == 'x'", ["usr_1"], RESOURCE, CONTEXT, "subject is a list, not an object"),
    ("resource.starts_at in ['2025-06-01T11:00:01Z', 'x']", SUBJECT, RESOURCE, CONTEXT, "not a timestamp"),
]


@pytest.mark.parametrize(("condition", "subject", "resource", "context", "message"), EVALUATION_ERRORS)
def test_evaluation_errors(condition, subject, resource, context, message):
    with pytest.raises(EvaluationError) as caught:
        one(condition).holds(subject, resource, context)
    assert message in str(caught.value)


def test_a_bad_attribute_value_is_not_echoed():
    # Error messages reach people who may not be allowed to see the attribute's value.
    with pytest.raises(EvaluationError) as caught:
        one("resource.secret > now()").holds(SUBJECT, {"secret": "hunter2"}, CONTEXT)
    assert "hunter2" not in str(caught.value)


# --- Design guarantees -------------------------------------------------------------------------------------


def test_holds_never_parses(monkeypatch):
    compiled = one("resource.scheduled_time > now() + 24h and user.role in ['member']")

    def no_parsing(*args):
        raise AssertionError("holds re-parsed the condition")

    monkeypatch.setattr(conditions_module, "_tokenize", no_parsing)
    monkeypatch.setattr(conditions_module, "_Parser", no_parsing)
    assert compiled.holds(SUBJECT, RESOURCE, CONTEXT) is True


def test_conditions_are_values():
    assert one("user.role == 'a'") == one("subject.role=='a'")
    assert isinstance(one("true"), Condition)
    assert len({one("user.role == 'a'"), one("subject.role == 'a'")}) == 1


def test_the_module_never_evaluates_text_and_imports_only_the_standard_library():
    tree = ast.parse(Path(conditions_module.__file__).read_text())
    builtins = {"eval", "exec", "compile", "getattr", "__import__"}  # re.compile is fine; builtins.compile is not
    methods = {"literal_eval", "import_module", "eval", "exec"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                assert func.id not in builtins, f"line {node.lineno} calls {func.id}"
            elif isinstance(func, ast.Attribute):
                assert func.attr not in methods, f"line {node.lineno} calls {func.attr}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                assert alias.name.split(".")[0] in sys.stdlib_module_names
        if isinstance(node, ast.ImportFrom):
            assert node.module.split(".")[0] in sys.stdlib_module_names | {"__future__"}
