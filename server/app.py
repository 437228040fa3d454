"""The application factory: the only place that wires everything together."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask, g, request
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

from config.settings import BaseConfig, load_config
from server import db
from server.auth import web as auth_web
from server.auth.web import authenticate_api_request
from server.protocols import service as protocols
from server.surveys import service as survey_service

ROOT = Path(__file__).resolve().parent.parent
csrf = CSRFProtect()

# API calls that need no token: (endpoint, method).
PUBLIC_API_CALLS = {("auth.TokenView", "POST"), ("mobile.activate", "POST")}


def create_app(config: BaseConfig | dict[str, Any] | None = None) -> Flask:
    """Build the Flask app; nothing runs at import time."""
    app = Flask(
        __name__,
        template_folder=str(ROOT / "api" / "templates"),
        static_folder=str(ROOT / "api" / "static"),
        instance_path=str(ROOT / "instance"),
    )
    settings = config if isinstance(config, dict) else (config or load_config()).as_dict()
    app.config.from_mapping(settings)
    app.permanent_session_lifetime = timedelta(seconds=app.config["PERMANENT_SESSION_LIFETIME"])
    # Browsers ask every site for /favicon.ico whatever the page links: serve it as a static file
    # (same endpoint, so it is cached like one).
    app.add_url_rule("/favicon.ico", endpoint="static", defaults={"filename": "favicon.ico"})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # The twilio client logs every request at INFO (about 11 lines per SMS): keep warnings only.
    logging.getLogger("twilio.http_client").setLevel(logging.WARNING)
    from server import access_log

    # Calendar-link tokens never reach our request logs (server/access_log.py).
    access_log.install()

    from api import input_guard

    # First: the id converter must exist before any route is added, and the body check must run
    # before any other before_request hook reads the body.
    input_guard.init_app(app)
    db.init_app(app)
    protocols.init_app(app)
    survey_service.init_app(app)
    auth_web.init_app(app)
    csrf.init_app(app)

    from api import (
        ack_report_pages,
        adherence_pages,
        admin,
        alerts,
        auth,
        docs,
        errors,
        fhir,
        health,
        messages,
        mobile,
        oncall,
        oncall_pages,
        page_kit,
        pages,
        participant_page,
        participant_pages,
        participants,
        reports,
        results,
        schedules,
        status_pages,
        survey_pages,
        surveys,
        today_pages,
        twilio,
    )

    api = errors.StepdownApi(app)
    app.extensions["stepdown_api"] = api
    for blueprint in (
        auth.blp,
        participants.blp,
        admin.blp,
        schedules.blp,
        messages.blp,
        results.blp,
        alerts.blp,
        surveys.blp,
        mobile.blp,
        reports.blp,
        oncall.blp,
    ):
        api.register_blueprint(blueprint)
        csrf.exempt(blueprint)  # bearer tokens: not exposed to CSRF
    app.register_blueprint(health.bp)
    app.register_blueprint(status_pages.bp)
    app.register_blueprint(docs.bp)
    app.register_blueprint(pages.bp)
    for page_blueprint in (
        today_pages,
        participant_pages,
        participant_page,
        adherence_pages,
        ack_report_pages,
        oncall_pages,
    ):
        app.register_blueprint(page_blueprint.bp)
    page_kit.init_app(app)
    app.register_blueprint(twilio.bp)
    app.register_blueprint(fhir.bp)
    csrf.exempt(fhir.bp)  # bearer tokens: not exposed to CSRF
    app.register_blueprint(survey_pages.bp)
    csrf.exempt(twilio.bp)  # the Twilio signature is these endpoints' authentication
    errors.register(app)
    from api import rate_limits

    # Limits per client on sign-in, activation codes and survey links: after every route exists.
    rate_limits.init_app(app)
    if app.config.get("TRUSTED_PROXY_COUNT"):
        # Behind N proxies the client is the Nth address from the right of X-Forwarded-For;
        # trusted only when configured, else anyone could pick the address they are counted as.
        proxies = app.config["TRUSTED_PROXY_COUNT"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies)  # type: ignore[method-assign]

    @app.before_request
    def _api_auth() -> None:
        if not request.path.startswith("/api/v1/") or request.endpoint is None:
            return  # not the API, or an unknown route the 404 handler answers
        if (request.endpoint, request.method) in PUBLIC_API_CALLS:
            return
        if request.path.startswith("/api/v1/mobile/"):
            from api.mobile import authenticate_participant

            authenticate_participant()
            return
        authenticate_api_request()

    @app.after_request
    def _security_headers(response: Any) -> Any:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault(
            "Content-Security-Policy", "default-src 'self'; img-src 'self' data:"
        )
        if "request_id" in g:
            response.headers["X-Request-ID"] = g.request_id
        if request.endpoint != "static":
            # Pages and API answers hold health data (survey pages too); login and error pages
            # are not worth an exception: only static files may be kept by a browser or proxy.
            response.headers["Cache-Control"] = "no-store"
        if app.config.get("STRICT_TRANSPORT_SECURITY"):
            response.headers["Strict-Transport-Security"] = app.config["STRICT_TRANSPORT_SECURITY"]
        return response

    from server import cli

    cli.register(app)
    return app
