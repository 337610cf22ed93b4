"""The self-service settings page at `/settings` (issue #12, ADR 0018): server-rendered forms
over the same authz commands as the `/v0` management API. The pages are the api's own routes,
so the one access decision routes, authenticates and rate-limits them; the session and CSRF
rules are pure (`core/sessions.py`)."""
