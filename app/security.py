"""The explorer's web defences, one ASGI middleware in front of every route.

- **Host allow-list**: a request whose ``Host`` header names another host is refused
  (400). The explorer binds loopback; a page on another site that re-points its own
  DNS name at 127.0.0.1 (DNS rebinding) would otherwise read the atlas through the
  browser. Loopback names are allowed, with the address the server binds and the
  names given by ``--allow-host`` (``*`` turns the check off).
- **Cross-site refusal** for POST, PUT, PATCH and DELETE (403): a browser says where a
  request comes from in ``Sec-Fetch-Site`` (every current browser), else in ``Origin``;
  anything but the explorer's own origin is refused. A client that sends neither (curl,
  a script) is no browser carrying a user's session, and passes. This is the check of
  Go's ``net/http.CrossOriginProtection``; the explorer has no cookies, so no token is
  needed on top.
- **Headers on every response**: a Content-Security-Policy the pages satisfy (scripts and
  styles only from /static, no inline script, nothing framed, forms and fetches to the
  explorer only), ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``,
  ``Referrer-Policy``, and cross-origin opener and resource policies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
ANY_HOST = "*"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SAME_SITE_FETCHES = frozenset({"same-origin", "none"})  # "none": the user typed it or used a bookmark

_POLICY = {
    "default-src": "'none'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",  # data: is the page's empty favicon
    "connect-src": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
    "base-uri": "'none'",
}
# The explorer's WebGL scatter (regl) compiles its draw calls with Function(), and its spatial index may run in a
# worker made from a blob: URL. Only that page gets them; htmx's own eval is off everywhere (htmx-config in base.html).
EVAL_PAGES = frozenset({"/explorer"})
_EVAL_POLICY = {**_POLICY, "script-src": "'self' 'unsafe-eval'", "worker-src": "'self' blob:"}


def _policy(directives: dict[str, str]) -> str:
    return "; ".join(f"{name} {value}" for name, value in directives.items())


CSP, CSP_WITH_EVAL = _policy(_POLICY), _policy(_EVAL_POLICY)
STATIC_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


def security_headers(path: str) -> dict[str, str]:
    """The headers every response to ``path`` carries."""
    return {"content-security-policy": CSP_WITH_EVAL if path in EVAL_PAGES else CSP, **STATIC_HEADERS}


def allowed_hosts(bound: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """Loopback names, the address the server binds (unless it binds every interface) and ``extra``."""
    hosts = {*LOOPBACK_HOSTS, *(_normal_host(h) for h in extra)}
    if bound not in ("0.0.0.0", "::", ""):
        hosts.add(_normal_host(bound))
    return frozenset(hosts)


def _normal_host(host: str) -> str:
    return host.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")


def host_name(header: str | None) -> str | None:
    """The host of a ``Host`` header without its port (``[::1]:8000`` -> ``::1``); None when malformed."""
    if not header:
        return None
    header = header.strip()
    if header.startswith("["):  # an IPv6 literal
        name, closed, rest = header[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    elif header.count(":") > 1:  # an IPv6 literal without its brackets is no valid Host
        return None
    else:
        name, _, port = header.partition(":")
    if port and not port.isdigit():
        return None
    return _normal_host(name) or None


def cross_site_reason(method: str, headers: Headers) -> str | None:
    """Why a state-changing request is refused as cross-site, or None when it may go on."""
    if method not in UNSAFE_METHODS:
        return None
    site = headers.get("sec-fetch-site")
    if site is not None:
        if site.lower() in SAME_SITE_FETCHES:
            return None
        return f"a {method} from another site is refused (Sec-Fetch-Site: {site})"
    origin = headers.get("origin")
    if origin is None:
        return None
    netloc = urlsplit(origin).netloc.lower() if origin != "null" else ""
    if netloc and netloc == (headers.get("host") or "").lower():
        return None
    return f"a {method} from another origin is refused (Origin: {origin})"


ErrorPage = Callable[[Request, int, str], Response]


class WebDefences:
    """ASGI middleware: the host allow-list, the cross-site refusal and the security headers (module docstring)."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str], error_page: ErrorPage):
        self.app = app
        self.hosts = hosts
        self.error_page = error_page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = security_headers(scope["path"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in extra.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        headers = Headers(scope=scope)
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            status, detail = refusal
            await self.error_page(Request(scope, receive), status, detail)(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def _refusal(self, scope: Scope, headers: Headers) -> tuple[int, str] | None:
        if ANY_HOST not in self.hosts:
            host = host_name(headers.get("host"))
            if host not in self.hosts:
                return 400, (f"this explorer answers requests for {', '.join(sorted(self.hosts))}, not for host "
                             f"{headers.get('host')!r}; serve it with --allow-host NAME to add a name")
        reason = cross_site_reason(scope["method"], headers)
        if reason is not None:
            return 403, f"{reason}: change the atlas from its own pages only"
        return None
