"""Path variants of a scope-protected route (SPEC A11), shared by the unit, integration and e2e
tests: each raw path, what it must be judged as, and the status each caller must get.

The routes (`ROUTES_TOML`, with the upstream's address filled in): `/admin` and the tree under
it need the scope `admin`; `/public/...` is public. Every variant below either names the admin
route (and then needs `admin`, whichever way it is written), names nothing (404), or is
ambiguous (400). None may reach `/admin` without the scope.
"""

from __future__ import annotations

from dataclasses import dataclass

ROUTES_TOML = """
[[route]]
path = "/admin"
methods = ["GET", "POST"]
upstream = "{upstream}"
scopes = ["admin"]

[[route]]
path = "/admin/{{rest:path}}"
methods = ["GET", "POST"]
upstream = "{upstream}"
scopes = ["admin"]

[[route]]
path = "/public/{{rest:path}}"
methods = ["GET"]
upstream = "{upstream}"
public = true
"""


@dataclass(frozen=True)
class Variant:
    raw: str  # as sent on the wire
    judged: str | None  # the normalised path the upstream gets; None: refused before routing
    status: tuple[int, int, int]  # no credential, a token without `admin`, a token with it


ADMIN = (401, 403, 200)
REFUSED = (400, 400, 400)
NOWHERE = (404, 404, 404)

VARIANTS = (
    Variant("/admin", "/admin", ADMIN),
    Variant("/%61dmin", "/admin", ADMIN),
    Variant("/%61%64%6d%69%6e", "/admin", ADMIN),
    Variant("/%61%64%6D%69%6E", "/admin", ADMIN),
    Variant("/admin/", "/admin", ADMIN),
    Variant("//admin", "/admin", ADMIN),
    Variant("///admin", "/admin", ADMIN),
    Variant("/admin//", "/admin", ADMIN),
    Variant("/./admin", "/admin", ADMIN),
    Variant("/admin/.", "/admin", ADMIN),
    Variant("/admin/%2e", "/admin", ADMIN),
    Variant("/admin/x/..", "/admin", ADMIN),
    Variant("/public/../admin", "/admin", ADMIN),
    Variant("/public/%2e%2e/admin", "/admin", ADMIN),
    Variant("/public/%2E%2E/admin", "/admin", ADMIN),
    Variant("/public/.%2e/admin", "/admin", ADMIN),
    Variant("/public/%2e./admin", "/admin", ADMIN),
    Variant("/public/x/../../admin", "/admin", ADMIN),
    Variant("/public/..//admin", "/admin", ADMIN),
    Variant("/admin/sub", "/admin/sub", ADMIN),
    Variant("/public/../admin/sub", "/admin/sub", ADMIN),
    Variant("/admin?next=/public/x", "/admin", ADMIN),
    Variant("/public/..%2fadmin", None, REFUSED),
    Variant("/public%2f..%2fadmin", None, REFUSED),
    Variant("/public%2F..%2Fadmin", None, REFUSED),
    Variant("/public/..%5cadmin", None, REFUSED),
    Variant("/public/..%5Cadmin", None, REFUSED),
    Variant("/public/..;/admin", None, REFUSED),
    Variant("/admin;x=1", None, REFUSED),
    Variant("/admin%00", None, REFUSED),
    Variant("/admin%2F", None, REFUSED),
    Variant("/public/%252e%252e/admin", None, REFUSED),
    Variant("/admin%", None, REFUSED),
    Variant("/admin%zz", None, REFUSED),
    Variant("/../admin", None, REFUSED),
    Variant("/public/../../admin", None, REFUSED),
    Variant("/ADMIN", None, NOWHERE),
    Variant("/Admin", None, NOWHERE),
    Variant("/admin%20", None, NOWHERE),
    Variant("/admin.", None, NOWHERE),
    Variant("/public/x", "/public/x", (200, 200, 200)),
    Variant("/public/x?/../admin", "/public/x", (200, 200, 200)),
)
