"""A polite, resumable image downloader for url + caption datasets (LAION style).

Web images fail in every way: dead links, rate limits, HTML error pages served with
200, endless bodies, corrupt bytes. ``Downloader`` fetches many urls in parallel with
one shared ``httpx.Client`` and turns each into the image bytes or a ``BadItem`` with
a stable reason:

- ``bad-url``: not an http(s) url.
- ``http-<status>``: a non-2xx answer after retries (``http-404``, ``http-503``...).
- ``timeout`` / ``connection-error``: the network failed on every attempt.
- ``not-an-image``: the content type is not ``image/*``.
- ``too-large``: the body exceeds ``max_bytes`` (checked while streaming), or the
  image declares more than ``max_pixels``.
- ``undecodable``, ``truncated``, ``empty-file``, ``unsupported-mode``: the body is not
  a usable image (checked with ``precompute.images.load_rgb``).

Connection errors, timeouts, 408, 429 and 5xx are retried with exponential backoff
(a small ``Retry-After`` is honoured); other 4xx are final.

The cache makes re-runs cheap and resumable: good bodies are stored under
``cache_dir/bodies`` keyed by the sha256 of the url (written atomically), and
permanent failures (4xx other than 408/429, ``not-an-image``, ``undecodable``) are
appended to ``cache_dir/failures.jsonl``. A re-run makes no request for either.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, UTC
from pathlib import Path
from typing import Any, TypeVar

import httpx
from PIL import Image

from precompute.errors import BadItem, ConfigError
from precompute.fileio import write_bytes_atomic
from precompute.images import DEFAULT_MAX_PIXELS, load_rgb

log = logging.getLogger(__name__)

DEFAULT_USER_AGENT = "blindspot-atlas/0.1 (research image sampler; python-httpx)"
FAILURES_FILE = "failures.jsonl"
_RETRY_STATUSES = {408, 429}
_PERMANENT_REASONS = {"not-an-image", "undecodable"}

T = TypeVar("T")

# The options a source passes through to the ``Downloader`` it opens for each pass over its rows.
DOWNLOAD_OPTIONS = ("timeout_s", "retries", "backoff_s", "max_bytes", "workers", "user_agent", "max_pixels")


def downloader_options(**options: Any) -> dict[str, Any]:
    """A source's ``Downloader`` keyword options (``DOWNLOAD_OPTIONS``; the downloader's defaults for those not
    given), checked by name so a misspelt option is refused where the source is made."""
    unknown = sorted(set(options) - set(DOWNLOAD_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown download option(s) {unknown}; expected some of {list(DOWNLOAD_OPTIONS)}")
    return options


class Downloader:
    """Fetch image urls in parallel with timeouts, retries, validation and a disk cache.

    ``retries`` is the number of extra attempts after the first one; the wait before
    retry n (0-based) is ``backoff_s * 2**n`` (plus up to 10% jitter so many workers
    do not hit a host in lockstep). ``timeout_s`` bounds each network operation
    (connect, each read); a whole attempt may take at most ``total_timeout_s``
    (default ``6 * timeout_s``), so a body that trickles in forever is a ``timeout``.
    ``stats`` counts requests, retries, cache hits and outcomes by reason.

    Use as a context manager (or call ``close``) to release the connection pool.
    """

    def __init__(
        self,
        cache_dir: str | Path,
        *,
        timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_bytes: int = 20_000_000,
        workers: int = 16,
        user_agent: str = DEFAULT_USER_AGENT,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        total_timeout_s: float | None = None,
        max_retry_after_s: float = 30.0,
    ):
        if timeout_s <= 0 or retries < 0 or backoff_s < 0 or max_bytes < 1 or workers < 1:
            raise ConfigError(
                "downloader needs timeout_s > 0, retries >= 0, backoff_s >= 0, max_bytes >= 1 and "
                f"workers >= 1; got timeout_s={timeout_s}, retries={retries}, backoff_s={backoff_s}, "
                f"max_bytes={max_bytes}, workers={workers}"
            )
        self.cache_dir = Path(cache_dir)
        self.bodies_dir = self.cache_dir / "bodies"
        try:
            self.bodies_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"download cache_dir {self.cache_dir} cannot be created: {err}") from err
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_bytes = max_bytes
        self.workers = workers
        self.max_pixels = max_pixels
        self.total_timeout_s = total_timeout_s if total_timeout_s is not None else 6 * timeout_s
        self.max_retry_after_s = max_retry_after_s
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._failures = self._load_failures()
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=True,
            headers={"User-Agent": user_agent, "Accept": "image/*"},
            limits=httpx.Limits(max_connections=workers, max_keepalive_connections=workers),
        )

    def __enter__(self) -> Downloader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the shared HTTP connection pool."""
        self._client.close()

    def fetch_many(self, urls: Sequence[str]) -> Iterator[tuple[int, bytes | BadItem]]:
        """Yield ``(index, body or BadItem)`` for every url, in input order.

        Fetching runs on ``workers`` threads; at most ``2 * workers`` results wait in
        memory, so a long url list streams. Each body has passed the image decode check.
        """
        return self._map(urls, self.fetch)

    def fetch_images(self, urls: Sequence[str]) -> Iterator[tuple[int, Image.Image | BadItem]]:
        """Like ``fetch_many`` but yields decoded RGB images (decoded once, on the workers)."""

        def fetch_image(url: str) -> Image.Image | BadItem:
            body, image = self._fetch(url)
            if isinstance(body, BadItem):
                return body
            return image if image is not None else self._decode(url, body)

        return self._map(urls, fetch_image)

    def fetch(self, url: str) -> bytes | BadItem:
        """Fetch one url through the cache; never raises for a bad url or response."""
        return self._fetch(url)[0]

    # -- internals -------------------------------------------------------------

    def _fetch(self, url: str) -> tuple[bytes | BadItem, Image.Image | None]:
        """Fetch through the cache; also return the image when a fresh body was decoded."""
        if not _is_http_url(url):
            self._count(None, "bad-url")
            return BadItem("bad-url", f"expected an http(s) url, got {url!r}"), None
        url = url.strip()
        key = url_key(url)
        failure = self._failures.get(key)
        if failure is not None:
            self._count("cache-hit-failure", failure.reason)
            return failure, None
        body_path = self._body_path(key)
        if body_path.is_file():
            try:
                body = body_path.read_bytes()
            except OSError as err:
                log.warning("cached body %s unreadable (%s); fetching again", body_path, err)
            else:
                self._count("cache-hit", "ok")
                return body, None
        body = self._download(url)
        image = None if isinstance(body, BadItem) else self._decode(url, body)
        if isinstance(image, BadItem):
            body, image = image, None
        if isinstance(body, BadItem):
            if _is_permanent(body.reason):
                self._record_failure(key, url, body)
            self._count(None, body.reason)
            return body, None
        self._store_body(body_path, body)
        self._count(None, "ok")
        return body, image

    def _map(self, urls: Sequence[str], fn: Callable[[str], T]) -> Iterator[tuple[int, T]]:
        """Run ``fn`` over ``urls`` on the pool; yield results in order, bounded window."""
        window = 2 * self.workers
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="download")
        pending: dict[int, Future[T]] = {}
        next_submit = 0
        try:
            for index in range(len(urls)):
                while next_submit < len(urls) and next_submit - index < window:
                    pending[next_submit] = pool.submit(fn, urls[next_submit])
                    next_submit += 1
                yield index, pending.pop(index).result()
        finally:
            # A consumer that stops early must not wait for the whole window to download.
            pool.shutdown(wait=True, cancel_futures=True)

    def _download(self, url: str) -> bytes | BadItem:
        """Fetch with retries; return the raw body or the final failure."""
        failure = BadItem("connection-error", url)
        for attempt in range(self.retries + 1):
            if attempt:
                self._count("retries")
            self._count("requests")
            outcome, retry_after = self._attempt(url)
            if isinstance(outcome, bytes):
                return outcome
            failure = outcome
            if not _is_retryable(outcome.reason) or attempt == self.retries:
                break
            wait = self.backoff_s * 2**attempt * (1 + 0.1 * random.random())
            if retry_after is not None:
                if retry_after > self.max_retry_after_s:
                    log.info("giving up on %s: Retry-After %.0fs is too long", url, retry_after)
                    break
                wait = max(wait, retry_after)
            time.sleep(wait)
        return failure

    def _attempt(self, url: str) -> tuple[bytes | BadItem, float | None]:
        """One GET; returns (body or failure, Retry-After seconds if the server sent one)."""
        started = time.monotonic()
        try:
            with self._client.stream("GET", url) as response:
                if not response.is_success:
                    retry_after = _retry_after_s(response.headers.get("retry-after"))
                    status = response.status_code
                    return BadItem(f"http-{status}", f"{url} answered {status} {response.reason_phrase}"), retry_after
                content_type = response.headers.get("content-type", "")
                if not content_type.split(";")[0].strip().lower().startswith("image/"):
                    return BadItem("not-an-image", f"{url} has content type {content_type or 'none'!r}"), None
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self.max_bytes:
                    return BadItem("too-large", f"{url} declares {declared} bytes > {self.max_bytes}"), None
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > self.max_bytes:
                        return BadItem("too-large", f"{url} sent more than {self.max_bytes} bytes"), None
                    if time.monotonic() - started > self.total_timeout_s:
                        return BadItem("timeout", f"{url} took over {self.total_timeout_s:g}s"), None
                    chunks.append(chunk)
                return b"".join(chunks), None
        except httpx.TimeoutException as err:
            return BadItem("timeout", f"{url}: {type(err).__name__} after {self.timeout_s:g}s"), None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as err:
            return BadItem("bad-url", f"{url}: {err}"), None
        except httpx.TooManyRedirects as err:
            return BadItem("connection-error", f"{url}: {err}"), None
        except httpx.TransportError as err:
            return BadItem("connection-error", f"{url}: {type(err).__name__}: {err}"), None

    def _decode(self, url: str, body: bytes) -> Image.Image | BadItem:
        try:
            return load_rgb(body, max_pixels=self.max_pixels)
        except BadItem as err:
            return BadItem(err.reason, f"{url}: {err.detail}")

    def _body_path(self, key: str) -> Path:
        return self.bodies_dir / key[:2] / key

    def _store_body(self, path: Path, body: bytes) -> None:
        """Write atomically so a killed run never leaves a half body in the cache."""
        try:
            write_bytes_atomic(path, body)
        except OSError as err:
            log.warning("could not cache %s: %s", path, err)

    def _load_failures(self) -> dict[str, BadItem]:
        """Read the permanent failures of earlier runs; a torn last line is ignored."""
        path = self.cache_dir / FAILURES_FILE
        failures: dict[str, BadItem] = {}
        if not path.is_file():
            return failures
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as err:
            log.warning("ignoring unreadable %s: %s", path, err)
            return failures
        for line in text.splitlines():
            try:
                record = json.loads(line)
                failures[record["key"]] = BadItem(record["reason"], record.get("detail", ""))
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
        return failures

    def _record_failure(self, key: str, url: str, failure: BadItem) -> None:
        line = json.dumps({"key": key, "url": url, "reason": failure.reason, "detail": failure.detail})
        with self._lock:
            self._failures[key] = failure
            try:
                with open(self.cache_dir / FAILURES_FILE, "a", encoding="utf-8") as handle:
                    handle.write(line + "\n")
            except OSError as err:  # losing the memo only costs a refetch next run
                log.warning("could not record the failure of %s: %s", url, err)

    def _count(self, event: str | None, outcome: str | None = None) -> None:
        with self._lock:
            if event:
                self.stats[event] += 1
            if outcome:
                self.stats[f"outcome:{outcome}"] += 1


def url_key(url: str) -> str:
    """The cache key of a url: the hex sha256 of its exact text."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


def _is_http_url(url: object) -> bool:
    if not isinstance(url, str) or not url.strip():
        return False
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, ValueError, TypeError):
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.host)


def _is_retryable(reason: str) -> bool:
    if reason in ("timeout", "connection-error"):
        return True
    if reason.startswith("http-"):
        status = int(reason.removeprefix("http-"))
        return status >= 500 or status in _RETRY_STATUSES
    return False


def _is_permanent(reason: str) -> bool:
    """Failures a re-run would only repeat: 4xx (bar 408/429) and bad content."""
    if reason.startswith("http-"):
        status = int(reason.removeprefix("http-"))
        return 400 <= status < 500 and status not in _RETRY_STATUSES
    return reason in _PERMANENT_REASONS


def _retry_after_s(value: str | None) -> float | None:
    """Parse a Retry-After header (seconds or an HTTP date) into seconds from now."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
