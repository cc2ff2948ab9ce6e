"""A minimal Django app for unstick's end-to-end tests. Its session handling is Django's own,
unchanged: database sessions in PostgreSQL, cookie `sessionid`, `SessionMiddleware` and
`AuthenticationMiddleware`.

    python3 django_app.py migrate DATABASE
    python3 django_app.py serve PORT DATABASE INSTANCE MODE

MODE says how it trusts the identity unstick injects in `X-Auth-User`:
- `header`: a view reads the header when its own session has no user; nothing is written to
  the session (so Django deletes a `sessionid` cookie it has no session for).
- `remote-user`: Django's `RemoteUserMiddleware` with the header, which logs the header's
  user into a fresh session (and logs it out of a request without the header);
- `persistent-remote-user`: the same with `PersistentRemoteUserMiddleware`, which keeps the
  login on a request without the header.

`POST /login` (form `user`), `POST /logout`, `GET /me` -> `{"user", "instance"}`.
"""

import json
import sys

import django
from django.conf import settings
from django.core.management import call_command, execute_from_command_line
from django.http import HttpResponse
from django.urls import path

SECRET_KEY = "unstick-test-django-secret-key-0123456789"


def configure(database, mode):
    middleware = [
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
    ]
    backends = ["django.contrib.auth.backends.ModelBackend"]
    if mode in ("remote-user", "persistent-remote-user"):
        middleware.append("__main__.HeaderRemoteUserMiddleware")
        backends.insert(0, "django.contrib.auth.backends.RemoteUserBackend")
    settings.configure(
        DEBUG=False,
        SECRET_KEY=SECRET_KEY,
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django.contrib.sessions",
        ],
        MIDDLEWARE=middleware,
        AUTHENTICATION_BACKENDS=backends,
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": database,
                "USER": "postgres",
                "HOST": "127.0.0.1",
                "PORT": "5432",
            }
        },
        SESSION_ENGINE="django.contrib.sessions.backends.db",
        USE_TZ=True,
        LOGGING_CONFIG=None,
    )
    django.setup()
    global auth, HeaderRemoteUserMiddleware
    from django.contrib import auth
    from django.contrib.auth import middleware as auth_middleware

    base = (
        auth_middleware.PersistentRemoteUserMiddleware
        if mode == "persistent-remote-user"
        else auth_middleware.RemoteUserMiddleware
    )

    class HeaderRemoteUserMiddleware(base):
        """The documented way to trust a custom header: `HTTP_X_AUTH_USER` is `X-Auth-User`."""

        header = "HTTP_X_AUTH_USER"


INSTANCE = "?"
MODE = "header"


def answer(user):
    body = json.dumps({"user": user, "instance": INSTANCE})
    return HttpResponse(body, content_type="application/json")


def current_user(request):
    if request.user.is_authenticated:
        return request.user.get_username()
    if MODE == "header":
        return request.META.get("HTTP_X_AUTH_USER")
    return None


def me(request):
    return answer(current_user(request))


def login(request):
    if request.method != "POST" or not request.POST.get("user"):
        return HttpResponse("POST a form field `user`\n", status=400)
    user, _ = auth.get_user_model().objects.get_or_create(username=request.POST["user"])
    auth.login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    # What unstick's postgres old store maps to the identity header.
    request.session["username"] = user.get_username()
    return answer(user.get_username())


def logout(request):
    if request.method != "POST":
        return HttpResponse("POST to log out\n", status=405)
    auth.logout(request)
    return answer(None)


urlpatterns = [path("me", me), path("login", login), path("logout", logout)]


if __name__ == "__main__":
    if sys.argv[1] == "migrate":
        configure(sys.argv[2], "header")
        call_command("migrate", verbosity=0, interactive=False)
    else:
        port, database, INSTANCE, MODE = sys.argv[2:6]
        configure(database, MODE)
        execute_from_command_line(
            [sys.argv[0], "runserver", "--noreload", "--skip-checks", f"127.0.0.1:{port}"]
        )
