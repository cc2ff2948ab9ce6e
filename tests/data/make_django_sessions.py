"""Makes tests/data/django_sessions.json: session rows written by real Django, for the Rust
tests of unstick's Django old store (CI needs no Django).

How it was run (from the repository root):
    pip install django            # produced with Django 5.2.19, CPython 3.11
    python3 tests/data/make_django_sessions.py > tests/data/django_sessions.json

Each session is a real login (django.contrib.auth.login through the test client, with the
database session backend on an in-memory SQLite) under a given SECRET_KEY; `session_data` is
read back from the django_session table exactly as Django stored it; one more row is a bare
`SessionStore` holding only `_auth_user_id` (too small for zlib to pay: Django stores it
uncompressed). Django's own decoder is
then asked what each row means under the app's current keys (SECRET_KEY + SECRET_KEY_FALLBACKS),
and that answer is recorded as `django_decodes_to` for the Rust tests to match.
"""

import json
import sys

import django
from django.conf import settings

CURRENT_KEY = "unstick-test-current-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"
OLD_KEY = "unstick-test-old-secret-key-rotated-away-0123456789abcdefghijklmnopq"
OTHER_KEY = "unstick-test-some-other-app-secret-key-0123456789abcdefghijklmnopq"

settings.configure(
    SECRET_KEY=CURRENT_KEY,
    SECRET_KEY_FALLBACKS=[OLD_KEY],
    INSTALLED_APPS=[
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
    ],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    SESSION_ENGINE="django.contrib.sessions.backends.db",
    MIDDLEWARE=[],
    ROOT_URLCONF=__name__,
    USE_TZ=True,
    PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
)
urlpatterns = []
django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.contrib.sessions.backends.db import SessionStore  # noqa: E402
from django.contrib.sessions.models import Session  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

call_command("migrate", verbosity=0)


def login(username, signed_with, extra=None):
    """A real login; returns the stored row. `extra` adds app data (makes it compress)."""
    user = User.objects.create_user(username, f"{username}@example.test", "pw")
    with override_settings(SECRET_KEY=signed_with, SECRET_KEY_FALLBACKS=[]):
        client = Client()
        client.force_login(user)
        if extra:
            session = client.session
            session.update(extra)
            session.save()
        key = client.session.session_key
        row = Session.objects.get(session_key=key)
    return user, row


def bare_session(user_id):
    """A session saved through SessionStore itself, small enough to stay uncompressed."""
    store = SessionStore()
    store["_auth_user_id"] = user_id
    store.save()
    return Session.objects.get(session_key=store.session_key)


rows = []
cases = [
    ("alice", CURRENT_KEY, "current", None),
    ("bob", CURRENT_KEY, "current", {"cart": ["apple"] * 40, "theme": "dark", "name": "Bøb 日本"}),
    ("carol", OLD_KEY, "old", None),
    ("mallory", OTHER_KEY, "other", None),
]
for username, key, key_name, extra in cases:
    user, row = login(username, key, extra)
    # What the app itself (current key + fallbacks) makes of the stored row.
    decoded = SessionStore().decode(row.session_data)
    rows.append(
        {
            "name": username,
            "signed_with": key_name,
            "session_key": row.session_key,
            "session_data": row.session_data,
            "compressed": row.session_data.startswith("."),
            "user_id": str(user.pk),
            "django_decodes_to": decoded,
        }
    )

row = bare_session("5")
rows.append(
    {
        "name": "dave",
        "signed_with": "current",
        "session_key": row.session_key,
        "session_data": row.session_data,
        "compressed": row.session_data.startswith("."),
        "user_id": "5",
        "django_decodes_to": SessionStore().decode(row.session_data),
    }
)
assert not rows[-1]["compressed"], "the bare session should be stored uncompressed"
assert all(r["compressed"] for r in rows[:-1])

json.dump(
    {
        "django_version": django.get_version(),
        "salt": SessionStore().key_salt,
        "secret_key": CURRENT_KEY,
        "old_secret_key": OLD_KEY,
        "other_secret_key": OTHER_KEY,
        "sessions": rows,
    },
    sys.stdout,
    indent=2,
    ensure_ascii=False,
)
sys.stdout.write("\n")
