"""Templates (Jinja2, autoescaped: every value is HTML-escaped unless a chart marks itself
safe) and the headers every page carries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from .guard import PAGE_HEADERS

HERE = Path(__file__).parent
_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["pct"] = lambda v: "n/a" if v is None else f"{v:.0%}"
_env.filters["prob"] = lambda v: "n/a" if v is None else f"{v:.3f}"


def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("session", None)
    html = _env.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)
