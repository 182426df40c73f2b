"""Who is asking and whether they may: the checks every /v1 request passes, and the record of them.

- `gate`: the ASGI middleware every /v1 request passes through (request ids, authentication, rate limit,
  errors to answers, the audit of every refusal and error);
- `auth`: bearer tokens (JWT) to identities; `sessions`: the console's session cookie and its CSRF token;
- `access`: who may read, tail, export or delete which room; `cursors`: signed pagination cursors;
- `ratelimit`: per-caller request rate and concurrent streams; `floods`: 429s audited at a bounded cost;
- `audit`: the access audit's rows.
"""
