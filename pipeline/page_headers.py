"""The headers of every page a person's browser opens from this server: the console's shell and static
files (pipeline.console.pages) and the API's own pages (a refused single sign-on,
pipeline.api.security.error_pages). One home, so the two stages cannot drift apart.

A strict Content-Security-Policy (scripts, styles, images and requests from this origin only, no inline
script, no plugins, no framing, forms posting only here), no sniffing, no referrer, no cross-origin
opener or embedding, and no camera, microphone, location or payment.
"""

from __future__ import annotations

__all__ = ["CONTENT_SECURITY_POLICY", "PAGE_SECURITY_HEADERS"]

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
PAGE_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
