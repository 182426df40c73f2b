"""The room console: a web dashboard for room owners, moderators and support staff, served by the API.

It is a client of the query API on the same origin: pages are static files shipped in this package, and
every piece of data comes from /v1 endpoints, through the API's access rules and into its access audit.
"""

from pipeline.console.links import sign_in_link
from pipeline.console.pages import CONTENT_SECURITY_POLICY, console_routes, mount

__all__ = ["CONTENT_SECURITY_POLICY", "console_routes", "mount", "sign_in_link"]
