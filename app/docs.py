"""The API's OpenAPI document and its interactive docs at ``/docs``."""

from __future__ import annotations

from typing import Any

from apiflask import APIFlask
from apispec.ext.marshmallow.common import make_schema_key
from flask import Blueprint
from marshmallow import Schema
from swagger_ui_bundle import swagger_ui_path


class LookoutAPI(APIFlask):
    """APIFlask with one fix to its OpenAPI schema registry, and Flask's ensure_sync remembered.

    APIFlask 3.1 remembers only the schemas it registered itself. When apispec has already
    added a schema while resolving a ``Nested`` field (``UsersPage.items`` holds ``UserFull``),
    APIFlask registers it again under a new name (``UserFull1``). Reuse apispec's name instead.
    tests/test_openapi.py fails if a suffixed duplicate comes back.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._synced: dict[Any, Any] = {}
        super().__init__(*args, **kwargs)

    def ensure_sync(self, func: Any) -> Any:
        """Flask's answer, remembered per function.

        Flask asks ``inspect.iscoroutinefunction()`` of every hook, view and error handler it
        calls, fourteen times per request here, and the answer never changes for a function
        (Flask documents ensure_sync as the method to override). Remembering it saves 0.05
        million instructions per request: 4% of an in-process ``GET /`` (9% with tracing off),
        0.6% of the users endpoint (valgrind, Flask 3.1.3). tests/test_openapi.py fails, naming
        Flask's version, if Flask's answer for a plain function stops being the function itself.
        """
        try:
            return self._synced[func]
        except KeyError:
            synced = self._synced[func] = super().ensure_sync(func)
            return synced
        except TypeError:  # an unhashable callable
            return super().ensure_sync(func)

    def _register_schema_and_get_ref(self, spec: Any, registered: dict[int, str],
                                     schema_obj: Any) -> dict[str, str]:
        plugin = getattr(self, "_ma_plugin", None)
        if plugin is not None and isinstance(schema_obj, Schema):
            name = plugin.converter.refs.get(make_schema_key(schema_obj))
            if name is not None:
                return {"$ref": f"#/components/schemas/{name}"}
        return super()._register_schema_and_get_ref(spec, registered, schema_obj)  # type: ignore[misc]


PROBLEM = "application/problem+json"
BODY_ERRORS = {"400": "Body is not valid JSON, or nested too deeply",
               "413": "Body larger than MAX_CONTENT_LENGTH",
               "415": "Body is not JSON"}
NO_DATABASE = {"/", "/livez"}
RATE_LIMITED = "Too many requests; retry after Retry-After seconds"
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying",
                               "schema": {"type": "integer", "minimum": 1}}}


def describe_problems(spec: dict[Any, Any] | str) -> dict[Any, Any] | str:
    """Serve error responses as problem+json and list the errors any operation can give.

    Also states what the code enforces beyond the schemas: a write needs its body, a partial
    update at least one field, and rate-limited operations may answer 429.
    """
    if not isinstance(spec, dict):  # SPEC_PROCESSOR_PASS_OBJECT is off: the spec is a dict
        return spec
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            extra = dict(BODY_ERRORS) if "requestBody" in operation else {}
            if "requestBody" in operation:
                operation["requestBody"]["required"] = True
            if path not in NO_DATABASE:
                extra["503"] = "Database unavailable; retry after Retry-After seconds"
            if is_rate_limited(path, method):
                extra["429"] = RATE_LIMITED
            if any(p.get("in") == "query" for p in operation.get("parameters", [])):
                extra["414"] = "Request line longer than the server accepts (8190 bytes)"
            for status, description in extra.items():
                responses.setdefault(status, {"description": description,
                                              "content": {"application/json": {"schema": problem_ref}}})
            for status in ("429", "503"):
                if status in responses:
                    responses[status].setdefault("headers", RETRY_AFTER)
            for status, response in responses.items():
                if status[0] in "45" and "application/json" in response.get("content", {}):
                    response["content"] = {PROBLEM: response["content"]["application/json"]}
    describe_views(spec)
    from .schemas import name_pattern

    for schema in ("UserIn", "UserPatch"):  # the exact rule: not only invisible characters
        spec["components"]["schemas"][schema]["properties"]["name"]["pattern"] = name_pattern()
    # At least one field to change; current_password alone changes nothing.
    patch = spec["components"]["schemas"]["UserPatch"]
    patch["anyOf"] = [{"required": [name]} for name in patch["properties"] if name != "current_password"]
    return spec


def is_rate_limited(path: str, method: str) -> bool:
    """The operations with a rate limit: the token endpoint, every write of the API and the
    reads of the users (app/auth/limits.py, app/api/limits.py)."""
    from .ratelimit import WRITE_METHODS

    return path.startswith("/api/v1/") and (method.upper() in WRITE_METHODS
                                            or path.startswith("/api/v1/users"))


# The operations whose answer carries a user other than the caller, and the rule each follows.
USER_ANSWERS = {("/api/v1/users/{user_id}", "get"): "GET", ("/api/v1/users", "post"): "CREATE",
                ("/api/v1/users/{user_id}", "patch"): "PATCH_PROFILE"}
VIEW_SCHEMAS = {"public": "UserPublic", "full": "UserFull"}


def describe_views(spec: dict[Any, Any]) -> None:
    """Say which caller gets which view of a user, from the rules the views follow
    (app/api/policy.py): the answer is one of UserPublic and UserFull, named per caller."""
    from .api.policy import RULES, Caller, Operation
    from .schemas import UserPublic

    schemas = spec["components"]["schemas"]
    full = schemas["UserFull"]
    public_fields = list(UserPublic._declared_fields)
    schemas["UserPublic"] = {"type": "object",
                             "properties": {k: full["properties"][k] for k in public_fields},
                             "required": [k for k in full.get("required", []) if k in public_fields],
                             # a full record must not pass as a public one: oneOf needs exactly one
                             "additionalProperties": False, "description": UserPublic.__doc__}
    for (path, method), name in USER_ANSWERS.items():
        rules = RULES[Operation[name]]
        for status, response in spec["paths"][path][method]["responses"].items():
            if not status.startswith("2"):
                continue
            who = {view: [str(c) for c in Caller if (r := rules.get(c)) and r.view == view]
                   for view in VIEW_SCHEMAS}
            response["description"] = "; ".join(
                f"`{VIEW_SCHEMAS[view]}` for callers of kind {', '.join(callers)}"
                for view, callers in who.items() if callers) + " (callers: app/README.md, Who may do what)."
            response["content"]["application/json"]["schema"] = {
                "oneOf": [{"$ref": f"#/components/schemas/{VIEW_SCHEMAS[view]}"} for view in VIEW_SCHEMAS]}


def init_app(app: APIFlask) -> None:
    """Describe errors as problem+json; serve Swagger UI's files so /docs works offline."""
    from .schemas import Problem, ValidationProblem  # models and SQLAlchemy: not at `import app`

    app.config["HTTP_ERROR_SCHEMA"] = Problem
    app.config["VALIDATION_ERROR_SCHEMA"] = ValidationProblem
    app.spec_processor(describe_problems)
    app.register_blueprint(
        Blueprint("docs_assets", __name__, static_folder=swagger_ui_path,
                  static_url_path="/docs/static")
    )
