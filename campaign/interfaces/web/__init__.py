"""The public HTTP side: signup page, double opt-in, one-click unsubscribe (RFC 8058), click
redirects, the ebook and /healthz (/metrics is on the operators' listener, interfaces.admin).

app wires the routes (routes), the pages (pages) and one error table (errors); request_input
reads hostile bodies; http_guard bounds slow clients; rate_limit caps signups per address."""

from campaign.interfaces.web.app import create_app, listen, make_server, serve_in_thread
from campaign.interfaces.web.rate_limit import RateLimiter

__all__ = ["RateLimiter", "create_app", "listen", "make_server", "serve_in_thread"]
