"""The partner portal's 2FA pages, served by the auth service: plain HTML, CSS and JS.

Every page response carries a strict Content-Security-Policy: scripts and styles only
from this origin (no inline code), connections only here and to the enrolment service,
images from here and from blob URLs (the QR code is fetched with the bearer token).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, Response

__all__ = ["router"]

router = APIRouter(prefix="/portal", include_in_schema=False)

PAGES = Path(__file__).resolve().parent / "portal"
TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _headers(request: Request) -> dict[str, str]:
    enrolment = _origin(request.app.state.deps.settings.enrolment_url)
    policy = "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' blob:",
            f"connect-src 'self' {enrolment}",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


@router.get("")
async def page(request: Request) -> Response:
    body = (PAGES / "index.html").read_bytes()
    return Response(body, media_type="text/html; charset=utf-8", headers=_headers(request))


@router.get("/static/{name}")
async def static(name: Literal["app.js", "style.css"], request: Request) -> Response:
    return Response((PAGES / name).read_bytes(), media_type=TYPES[name], headers=_headers(request))


@router.get("/config.json")
async def config(request: Request) -> dict[str, str]:
    return {"enrolment_url": request.app.state.deps.settings.enrolment_url.rstrip("/")}
