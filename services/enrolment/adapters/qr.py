"""Drawing the enrolment's QR code (segno)."""

from __future__ import annotations

import io

import segno


def qr_image(uri: str, kind: str) -> bytes:
    """The QR code of ``uri`` as SVG or PNG, dark on white with the quiet zone."""
    out = io.BytesIO()
    code = segno.make(uri, error="m", micro=False)
    if kind == "svg":
        code.save(out, kind="svg", scale=6, border=4, light="white", xmldecl=False)
    else:
        code.save(out, kind="png", scale=6, border=4)
    return out.getvalue()
