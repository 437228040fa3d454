"""Administration: sites, staff users and studies (admins only; everyone may list their sites)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from sqlmodel import select

from api.auth import user_dict
from api.common import commit
from api.schemas import (
    SiteSchema,
    SiteUpdateSchema,
    StudySchema,
    UserCreateSchema,
    UserSchema,
    UserUpdateSchema,
)
from server import audit
from server.auth import service
from server.auth.models import Role, StaffUser
from server.auth.rules import Permission
from server.auth.scoping import sites_query
from server.auth.web import current_staff, require
from server.clock import utcnow
from server.db import get_session
from server.errors import Conflict, NotFound, field_error
from server.participants.models import Site
from server.participants.rules import is_valid_timezone, normalise_phone
from server.protocols.models import Study

blp = Blueprint("admin", __name__, url_prefix="/api/v1", description="Sites, users, studies")


def _check_sites(site_ids: list[int]) -> None:
    session = get_session()
    found = set(session.exec(select(Site.id).where(Site.id.in_(site_ids))).all())  # type: ignore[union-attr]
    missing = sorted(set(site_ids) - found)
    if missing:
        raise field_error("site_ids", f"no such site: {', '.join(map(str, missing))}")


def _staff_phone(raw: str | None) -> str | None:
    if raw is None or raw == "":
        return None
    if not raw.strip().startswith("+"):
        raise field_error("phone", "staff numbers must be in international format (+...)")
    try:
        return normalise_phone(raw, None)
    except ValueError as exc:
        raise field_error("phone", str(exc)) from None


@blp.route("/sites")
class SitesView(MethodView):
    @blp.response(200, SiteSchema(many=True))
    def get(self) -> list[Site]:
        """Your sites (admins: every site)."""
        user = current_staff()
        session = get_session()
        q = select(Site) if user.role == Role.ADMIN else sites_query(user)
        return list(session.exec(q.order_by(Site.id)).all())  # type: ignore[arg-type]

    @blp.arguments(SiteSchema)
    @blp.response(201, SiteSchema)
    def post(self, args: dict[str, Any]) -> Site:
        """Create a site (admins)."""
        user = require(Permission.MANAGE_SITES)
        if not is_valid_timezone(args["timezone"]):
            raise field_error("timezone", "not a known IANA time zone")
        session = get_session()
        if session.exec(select(Site).where(Site.code == args["code"])).first():
            raise Conflict("code: already used", {"code": ["already used"]})
        site = service.create_site(session=session, actor=user, now=utcnow(), **args)
        commit()
        return site


@blp.route("/sites/<int:site_id>")
class SiteView(MethodView):
    @blp.arguments(SiteUpdateSchema)
    @blp.response(200, SiteSchema)
    def patch(self, args: dict[str, Any], site_id: int) -> Site:
        """Change a site (admins)."""
        user = require(Permission.MANAGE_SITES)
        session = get_session()
        site = session.get(Site, site_id)
        if site is None:
            raise NotFound("site not found")
        if "timezone" in args and not is_valid_timezone(args["timezone"]):
            raise field_error("timezone", "not a known IANA time zone")
        if "country" in args:
            args["country"] = args["country"].upper()
        service.update_site(session=session, actor=user, site=site, changes=args, now=utcnow())
        commit()
        return site


@blp.route("/users")
class UsersView(MethodView):
    @blp.response(200, UserSchema(many=True))
    def get(self) -> list[dict[str, Any]]:
        """All staff users (admins)."""
        require(Permission.MANAGE_USERS)
        users = get_session().exec(select(StaffUser).order_by(StaffUser.id)).all()  # type: ignore[arg-type]
        return [user_dict(u) for u in users]

    @blp.arguments(UserCreateSchema)
    @blp.response(201, UserSchema)
    def post(self, args: dict[str, Any]) -> dict[str, Any]:
        """Create a staff user with a role and sites (admins)."""
        actor = require(Permission.MANAGE_USERS)
        session = get_session()
        problem = service.password_problem(args["password"])
        if problem:
            raise field_error("password", problem)
        _check_sites(args["site_ids"])
        email = args["email"].strip().lower()
        if session.exec(select(StaffUser).where(StaffUser.email == email)).first():
            raise Conflict("email: already registered", {"email": ["already registered"]})
        user = service.create_user(
            session=session,
            actor=actor,
            email=email,
            full_name=args["full_name"],
            password=args["password"],
            role=Role(args["role"]),
            site_ids=args["site_ids"],
            phone_e164=_staff_phone(args.get("phone")),
            now=utcnow(),
        )
        commit()
        return user_dict(user)


@blp.route("/users/<int:user_id>")
class UserView(MethodView):
    @blp.response(200, UserSchema)
    def get(self, user_id: int) -> dict[str, Any]:
        """One staff user (admins)."""
        require(Permission.MANAGE_USERS)
        user = get_session().get(StaffUser, user_id)
        if user is None:
            raise NotFound("user not found")
        return user_dict(user)

    @blp.arguments(UserUpdateSchema)
    @blp.response(200, UserSchema)
    def patch(self, args: dict[str, Any], user_id: int) -> dict[str, Any]:
        """Change a staff user's role, phone, activity or sites (admins)."""
        actor = require(Permission.MANAGE_USERS)
        session = get_session()
        user = session.get(StaffUser, user_id)
        if user is None:
            raise NotFound("user not found")
        site_ids = args.pop("site_ids", None)
        if site_ids is not None:
            _check_sites(site_ids)
        changes: dict[str, Any] = {}
        for key in ("full_name", "is_phone_verified", "is_active"):
            if key in args:
                changes[key] = args[key]
        if "role" in args:
            changes["role"] = Role(args["role"])
        if "phone" in args:
            changes["phone_e164"] = _staff_phone(args["phone"])
        if user.id == actor.id and (
            changes.get("is_active") is False
            or ("role" in changes and changes["role"] != Role.ADMIN)
        ):
            raise Conflict("you cannot deactivate or demote yourself")
        service.update_user(
            session=session,
            actor=actor,
            user=user,
            changes=changes,
            site_ids=site_ids,
            now=utcnow(),
        )
        commit()
        return user_dict(user)


@blp.route("/studies")
class StudiesView(MethodView):
    @blp.response(200, StudySchema(many=True))
    def get(self) -> list[Study]:
        """All studies run here."""
        current_staff()
        return list(get_session().exec(select(Study).order_by(Study.id)).all())  # type: ignore[arg-type]

    @blp.arguments(StudySchema)
    @blp.response(201, StudySchema)
    def post(self, args: dict[str, Any]) -> Study:
        """Register a study and its protocol key (admins)."""
        user = require(Permission.MANAGE_SITES)
        session = get_session()
        if session.exec(select(Study).where(Study.key == args["key"])).first():
            raise Conflict("key: already used", {"key": ["already used"]})
        now = utcnow()
        study = Study(created_at=now, **args)
        session.add(study)
        session.flush()
        audit.record(
            session=session,
            actor=service.actor_of(user),
            actor_user_id=user.id,
            action="study.create",
            entity="study",
            entity_id=study.id,
            now=now,
            after=audit.snapshot(study, ("key", "title", "protocol_key")),
        )
        commit()
        return study
