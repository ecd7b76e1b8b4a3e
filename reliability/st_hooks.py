"""Schemathesis hooks (SCHEMATHESIS_HOOKS=st_hooks): align /openapi.json with the API's documented rules, and
keep schemathesis signed in.

Bulk bounds. The API requires that `POST /notes/bulk` takes 1..=5000 items
and answers 422 for an empty array, but /openapi.json declares a bare array. Without this, the
`positive_data_acceptance` check reports `POST /notes/bulk []` -> 422 as a schema-valid request
rejected. We add `minItems`/`maxItems` here (what the API documents) instead of switching the
check off for every operation. (Reported to the lead: the schema should carry these bounds.)

Identity. Every `/notes` route and most `/users` routes need `Authorization: Bearer <token>`.
The scenario signs up one user, makes it an admin with `api create-admin` and signs it in, and
hands the credentials over in the environment (REL_ST_BASE, REL_ST_EMAIL, REL_ST_PASSWORD,
REL_ST_TOKEN, and REL_ST_API_BIN + REL_ST_DATABASE_URL for `api create-admin`). An admin, so
that the users routes answer as they do for someone allowed to use them: as a plain user,
`POST /users` then `GET /users/{id}` is 404 by design (another user's account), which
schemathesis' `ensure_resource_availability` reports as a created resource not found, and
`GET /users` would only ever answer 403. Notes stay private for admins too.

The token is set by a `@schemathesis.auth` provider rather than a fixed `--header`, because
schemathesis itself calls the routes that end or change that identity: `DELETE
/sessions/current` (revokes the token), `DELETE /users/{id}` on its own id (deletes the user,
its notes and sessions), `PATCH /users/{id}` on its own id (a new e-mail, `is_active: false`,
`is_admin: false`; a new password needs `current_password`, so a generated one is refused). A
fixed header would then turn every later request into a 401 (or a 403) and make the rest of
the run meaningless. So `after_call` follows a 2xx of one of those on its own identity: a new
e-mail or password is remembered (the token that made the change stays valid); after a
sign-out the next request first signs in again; after a deletion, a deactivation or a lost
admin flag it first runs `api create-admin EMAIL` (creates the user again, or re-activates it,
makes it an admin and resets its password to the scenario's own; its old sessions end) and signs in. Any other 401 on a request that carried the token goes through
schemathesis' reactive re-authentication (the provider's `get` is called again and the request
replayed once), which restores the identity the same way. The operations stay in the run (they
are tested, not excluded); every restoration is logged to REL_ST_AUTH_LOG for the summary.
"""

import hashlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request

import schemathesis


@schemathesis.hook
def before_load_schema(context, raw_schema):
    op = raw_schema.get("paths", {}).get("/notes/bulk", {}).get("post")
    if not op:
        return
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    schema.setdefault("minItems", 1)
    schema.setdefault("maxItems", 5000)


_IDENTITY = {
    "email": os.environ.get("REL_ST_EMAIL"),
    "password": os.environ.get("REL_ST_PASSWORD", "reliability horse battery"),
    "initial_password": os.environ.get("REL_ST_PASSWORD", "reliability horse battery"),
    "token": os.environ.get("REL_ST_TOKEN"),
    "id": int(os.environ.get("REL_ST_USER_ID") or 0),
    "dirty": None,      # why the identity must be restored before the next request
    "initial": True,    # the scenario's token has not been handed out yet
}


def _note(event: str) -> None:
    path = os.environ.get("REL_ST_AUTH_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} {event}\n")


def _post(path: str, body: dict) -> tuple[int, dict]:
    """POST to the server under test; 503 + Retry-After (bounded hashing) is waited out."""
    url = os.environ["REL_ST_BASE"] + path
    for _ in range(30):
        req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            if e.code == 503 and e.headers.get("retry-after"):
                time.sleep(1)
                continue
            return e.code, {}
    return 503, {}


def _restore(reason: str) -> str:
    """Sign in again (after a sign-out) or, when the account was deleted, deactivated or lost
    its admin flag, `api create-admin` its e-mail first; the current token."""
    if _IDENTITY["dirty"] != "DELETE /sessions/current":
        _create_admin()
    status, data = _post("/sessions", {"email": _IDENTITY["email"], "password": _IDENTITY["password"]})
    if status != 201:
        raise RuntimeError(f"sign-in of the identity answered {status}")
    _IDENTITY.update(token=data["token"], id=data["user"]["id"], dirty=None)
    _note(f"restored {_IDENTITY['email']} (id {_IDENTITY['id']}) after {reason}")
    return data["token"]


def _create_admin() -> None:
    """`api create-admin` the identity's e-mail with the scenario's own password, which becomes
    the identity's again: a password schemathesis set through `PATCH /users/{id}` may hold a
    line break, and create-admin reads one line (it would set the first line only, and the
    sign-in after it would be refused)."""
    password = _IDENTITY["initial_password"]
    env = dict(os.environ, DATABASE_URL=os.environ["REL_ST_DATABASE_URL"], AUTO_MIGRATE="false",
               LOG_FORMAT="json", RUST_LOG="warn")
    res = subprocess.run([os.environ["REL_ST_API_BIN"], "create-admin", _IDENTITY["email"]],
                         input=password + "\n", env=env, capture_output=True, text=True,
                         timeout=60)
    if res.returncode != 0:
        raise RuntimeError(f"api create-admin exited {res.returncode}: {res.stderr.strip()[-300:]}")
    _IDENTITY["password"] = password


def _on_itself(case) -> bool:
    try:
        return int((case.path_parameters or {}).get("id")) == _IDENTITY["id"]
    except (TypeError, ValueError):
        return False


@schemathesis.hook
def before_call(context, case, **kwargs):
    """Changing one's own password or e-mail address needs `current_password` (missing:
    422). The schema cannot say "required when the target is oneself", so a generated
    self-service change of either gets the current password, as any client would send it.

    An `Idempotency-Key` names one request: the same key with another body is 422 by
    design. Schemathesis draws keys from a small space ("0", "00", ...) and sends them with
    every body it makes, as no client would, so the generated key gets a digest of the
    operation and body appended: the same request keeps its key (and is replayed), another
    request gets another key."""
    if case.operation.label == "PATCH /users/{id}" and _on_itself(case) and isinstance(case.body, dict) \
            and ("password" in case.body or "email" in case.body) \
            and "current_password" not in case.body:
        case.body["current_password"] = _IDENTITY["password"]
    headers = case.headers or {}
    for name in list(headers):
        if name.lower() == "idempotency-key" and isinstance(headers[name], str):
            digest = hashlib.sha256(
                f"{case.operation.label} {json.dumps(case.body, sort_keys=True, default=str)}".encode()
            ).hexdigest()[:16]
            headers[name] = f"{headers[name][:200]}-{digest}"


@schemathesis.hook
def after_call(context, case, response):
    """A 2xx that ended or changed the identity: restore it before the next request."""
    if not 200 <= response.status_code < 300:
        return
    label = case.operation.label
    if label == "DELETE /sessions/current":
        _IDENTITY["dirty"] = label                       # sign in again
    elif label == "DELETE /users/{id}" and _on_itself(case):
        _IDENTITY["dirty"] = f"{label} on itself"        # create the account again
    elif label == "PATCH /users/{id}" and _on_itself(case):
        try:
            user = response.json()
        except ValueError:
            user = {}
        # a new e-mail or password (the token that made the change stays valid): follow it
        _IDENTITY["email"] = user.get("email") or _IDENTITY["email"]
        if isinstance(case.body, dict) and isinstance(case.body.get("password"), str):
            _IDENTITY["password"] = case.body["password"]
        if user.get("is_active") is False or user.get("is_admin") is False:
            _IDENTITY["dirty"] = f"{label} on itself (is_active/is_admin)"


@schemathesis.auth()
class BearerToken:
    """The scenario's admin token; restored after the identity was ended or changed."""

    def get(self, case, context):
        # called first, then only when schemathesis dropped its cached token (after a 401, or
        # every 300 s): the scenario's token the first time, a restored identity afterwards
        if _IDENTITY.pop("initial", False) and _IDENTITY["token"] and not _IDENTITY["dirty"]:
            return _IDENTITY["token"]
        return _restore(_IDENTITY["dirty"] or f"a 401 on {case.operation.label}")

    def set(self, case, data, context):
        # the current token (it may be newer than the one schemathesis cached)
        token = _restore(_IDENTITY["dirty"]) if _IDENTITY["dirty"] else _IDENTITY["token"]
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {token}"
