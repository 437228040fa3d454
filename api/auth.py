"""Staff API tokens: get one with email and password, revoke it, see who you are."""

from __future__ import annotations

from typing import Any

from flask import current_app, g
from flask.views import MethodView
from flask_smorest import Blueprint

from api.common import commit
from api.rate_limits import client_key, sign_in_throttle
from api.schemas import TokenRequestSchema, TokenSchema, UserSchema
from server.auth import service
from server.auth.web import Unauthorized, current_staff
from server.clock import utcnow
from server.db import get_session

blp = Blueprint("auth", __name__, url_prefix="/api/v1/auth", description="Staff API tokens")


def user_dict(user: Any) -> dict[str, Any]:
    """A staff user for UserSchema."""
    return {
        "id": user.id,
        "email": user.email,
        "full_name": user.full_name,
        "role": user.role.value,
        "phone": user.phone_e164,
        "is_phone_verified": user.is_phone_verified,
        "is_active": user.is_active,
        "site_ids": service.site_ids_of(session=get_session(), user=user),
    }


@blp.route("/token")
class TokenView(MethodView):
    @blp.arguments(TokenRequestSchema)
    @blp.response(201, TokenSchema)
    @blp.doc(security=[])
    def post(self, args: dict[str, Any]) -> dict[str, Any]:
        """Exchange email and password for a bearer token (no cookie is set)."""
        session = get_session()
        now = utcnow()
        try:
            user = service.sign_in(
                session=session,
                throttle=sign_in_throttle(),
                email=args["email"],
                password=args["password"],
                client=client_key(),
                now=now,
            )
        except service.AuthError as exc:
            # Keep the failure count and its audit row even though the call fails.
            commit()
            raise Unauthorized(str(exc)) from None
        token, row = service.issue_token(
            session=session,
            user=user,
            ttl_hours=current_app.config["API_TOKEN_TTL_HOURS"],
            now=now,
            label=args.get("label"),
        )
        commit()
        return {
            "token": token,
            "token_type": "Bearer",
            "expires_at": row.expires_at,
            "user": {"id": user.id, "email": user.email, "role": user.role.value},
        }

    @blp.response(204)
    def delete(self) -> None:
        """Revoke the token used for this call."""
        user = current_staff()
        service.revoke_token(session=get_session(), token_row=g.api_token, user=user, now=utcnow())
        commit()


@blp.route("/me")
@blp.response(200, UserSchema)
def me() -> dict[str, Any]:
    """The staff user behind the token."""
    return user_dict(current_staff())
