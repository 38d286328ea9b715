"""Page-numbered pagination (`page` with `page_size` or `size`, from seeds 002 and 004) on offset lists.

Every offset-paginated list takes `limit`/`offset`; it also takes `page` (1 or more) with
`page_size` or its alias `size` (1 to 100, default 20), turned here into limit and offset before
the handler runs, so no handler knows of them. Mixing the two styles in one request is a 400
naming the parameters, as is `page_size` and `size` with different values. Cursor lists
(`starting_after`) keep their cursor and take none of these.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from datetime import date, datetime, time
from typing import Any

from flask import request

from tenantry.errors import Detail, ValidationFailed
from tenantry.times import parse_rfc3339

PAGE_PARAMETERS = ("page", "page_size", "size")
DEFAULT_PAGE_SIZE = 20


def _offset_list(operation: dict[str, Any]) -> bool:
    names = {p.get("name") for p in operation.get("parameters", ()) if p.get("in") == "query"}
    return {"limit", "offset", *PAGE_PARAMETERS} <= names


def page_window(page: int | None, page_size: int | None, size: int | None) -> tuple[int, int] | None:
    """Returns (limit, offset) for the page parameters given, None when none was; 400 on a mix."""
    if page is None and page_size is None and size is None:
        return None
    mixed = sorted(name for name in ("limit", "offset") if name in request.args)
    if mixed:
        given = [n for n, v in zip(PAGE_PARAMETERS, (page, page_size, size), strict=True) if v is not None]
        message = f"cannot be combined with {', '.join(given)}; use limit and offset or page and page_size"
        raise ValidationFailed(
            "Give limit/offset or page/page_size, not both.", [Detail(message, name) for name in mixed]
        )
    if page_size is not None and size is not None and page_size != size:
        message = "is an alias of page_size; send one, or both with the same value"
        raise ValidationFailed("page_size and size differ.", [Detail(message, "size"), Detail(message, "page_size")])
    limit = page_size if page_size is not None else size if size is not None else DEFAULT_PAGE_SIZE
    return limit, ((page or 1) - 1) * limit


def paginated(func: Callable[..., Any], operation: dict[str, Any]) -> Callable[..., Any]:
    """Returns `func`, taking the page parameters too when the operation is an offset list."""
    if not _offset_list(operation):
        return func

    @functools.wraps(func)
    def wrapper(
        *args: Any, page: int | None = None, page_size: int | None = None, size: int | None = None, **kwargs: Any
    ) -> Any:
        window = page_window(page, page_size, size)
        if window is not None:
            kwargs["limit"], kwargs["offset"] = window
        return func(*args, **kwargs)

    # Connexion unwraps `__wrapped__` to the handler to learn which arguments to pass: stop it here,
    # at a signature that names the page parameters too.
    del wrapper.__wrapped__
    signature = inspect.signature(func)
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None) for name in PAGE_PARAMETERS]
    # A handler taking **kwargs keeps it last, as a signature must.
    params = list(signature.parameters.values())
    rest = [p for p in params if p.kind is inspect.Parameter.VAR_KEYWORD]
    named = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD and p.name not in PAGE_PARAMETERS]
    wrapper.__signature__ = signature.replace(parameters=[*named, *extra, *rest])  # type: ignore[attr-defined]  # inspect reads it; typeshed does not declare it on functions
    return wrapper


def query_moment(value: str | None, name: str) -> datetime | None:
    """Returns a date-time query parameter as naive UTC (None when absent); raises a 400
    ValidationFailed naming the parameter when it is not RFC 3339."""
    if value is None:
        return None
    try:
        return parse_rfc3339(value)
    except ValueError:
        raise ValidationFailed(details=[Detail("is not an RFC 3339 date-time", name)]) from None


_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def query_bound(value: str | None, name: str, end: bool = False) -> datetime | None:
    """Returns a date-time query parameter, or a date (`YYYY-MM-DD`) as its whole UTC day, as naive UTC.

    A date is the day's first moment, or with `end` its last (an inclusive upper bound). None when
    absent; a 400 ValidationFailed naming the parameter when it is neither.
    """
    if value is not None and _DAY.match(value):
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise ValidationFailed(details=[Detail("is not a date (YYYY-MM-DD) or RFC 3339 date-time", name)]) from None
        return datetime.combine(day, time.max if end else time.min)
    return query_moment(value, name)
