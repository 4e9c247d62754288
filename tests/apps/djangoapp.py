"""A single-module Django project: one ORM model in sqlite, JSON pages of its rows.

Shared by scripts/bench-servers and tests/servers.rs (gunicorn serves `djangoapp:application`
with tests/apps on its python path).

    python3 djangoapp.py init DIR [ROWS]   create DIR/rows.sqlite3 (the model's table, ROWS rows,
                                           default 5000) and DIR/rows.tsv (the same rows, for
                                           the rack app in rackapp.ru)

The server reads APP_DATA (the DIR above). Routes:
    /rows?offset=O&limit=N   N rows (1..5000) from the ORM, rendered as one JSON object
    /health                  `ok PID` (plain text)
    /leak?mb=N&sleep=S       leaks on purpose (tests/limits.rs): appends N MiB (0..1024, written,
                             so resident) to a module-level list that is never freed, then
                             sleeps S seconds (0..30, default 0); answers
                             {"pid": PID, "leaked_mb": TOTAL in this process}
"""
import datetime
import os
import random
import sys
import time

import django
from django.conf import settings

DATA = os.environ.get("APP_DATA", os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))

settings.configure(
    DEBUG=False,
    SECRET_KEY="memtrim-bench-not-secret",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[],
    MIDDLEWARE=[],
    USE_TZ=True,
    TIME_ZONE="UTC",
    DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.path.join(DATA, "rows.sqlite3")}},
    LOGGING_CONFIG=None,
)
django.setup()

from django.db import connection, models  # noqa: E402
from django.http import HttpResponse, HttpResponseBadRequest, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402


class Row(models.Model):
    name = models.CharField(max_length=80)
    email = models.CharField(max_length=120)
    city = models.CharField(max_length=60)
    score = models.FloatField()
    visits = models.IntegerField()
    active = models.BooleanField()
    created = models.DateTimeField()
    tags = models.CharField(max_length=200)
    bio = models.TextField()

    class Meta:
        app_label = "benchrows"

    def as_dict(self):
        return {
            "id": self.id,
            "name": self.name,
            "email": self.email,
            "city": self.city,
            "score": self.score,
            "visits": self.visits,
            "active": self.active,
            "created": self.created.isoformat(),
            "tags": self.tags.split(","),
            "bio": self.bio,
            "url": f"/rows/{self.id}",
        }


MAX_ROWS = 5000


def rows(request):
    try:
        offset = int(request.GET.get("offset", "0"))
        limit = int(request.GET.get("limit", "1000"))
    except ValueError:
        return HttpResponseBadRequest("offset and limit are integers\n")
    if not (0 <= offset and 1 <= limit <= MAX_ROWS):
        return HttpResponseBadRequest("0 <= offset, 1 <= limit <= 5000\n")
    page = [r.as_dict() for r in Row.objects.order_by("id")[offset:offset + limit]]
    return JsonResponse({"offset": offset, "count": len(page), "pid": os.getpid(), "rows": page})


def health(request):
    return HttpResponse(f"ok {os.getpid()}\n", content_type="text/plain")


LEAKED = []  # never freed: the leak of /leak


def leak(request):
    try:
        mb = int(request.GET.get("mb", "1"))
        pause = float(request.GET.get("sleep", "0"))
    except ValueError:
        return HttpResponseBadRequest("mb is an integer, sleep a number\n")
    if not (0 <= mb <= 1024 and 0 <= pause <= 30):
        return HttpResponseBadRequest("0 <= mb <= 1024, 0 <= sleep <= 30\n")
    # 1 MiB blocks filled with a non-zero byte: resident, and live to the allocator
    LEAKED.extend(b"\x01" * (1 << 20) for _ in range(mb))
    if pause:
        time.sleep(pause)
    return JsonResponse({"pid": os.getpid(), "leaked_mb": len(LEAKED)})


urlpatterns = [path("rows", rows), path("health", health), path("leak", leak)]

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
         "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()
CITIES = ["Lisbon", "Oslo", "Quito", "Nairobi", "Osaka", "Lyon", "Perth", "Leeds", "Tartu", "Cusco"]


def init(directory, count):
    """Creates the table and `count` deterministic rows, plus rows.tsv with the same rows."""
    os.makedirs(directory, exist_ok=True)
    rng = random.Random(4)
    t0 = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    objs = []
    for i in range(1, count + 1):
        name = f"{rng.choice(WORDS).title()} {rng.choice(WORDS).title()}"
        objs.append(Row(
            id=i,
            name=name,
            email=f"{name.lower().replace(' ', '.')}{i}@example.org",
            city=rng.choice(CITIES),
            score=round(rng.random() * 100, 3),
            visits=rng.randrange(100000),
            active=rng.random() < 0.7,
            created=t0 + datetime.timedelta(seconds=rng.randrange(10**8)),
            tags=",".join(rng.sample(WORDS, rng.randrange(1, 6))),
            bio=" ".join(rng.choice(WORDS) for _ in range(rng.randrange(10, 40))),
        ))
    with connection.schema_editor() as editor:
        editor.create_model(Row)
    Row.objects.bulk_create(objs, batch_size=500)
    with open(os.path.join(directory, "rows.tsv"), "w") as f:
        for r in objs:
            f.write("\t".join([str(r.id), r.name, r.email, r.city, repr(r.score), str(r.visits),
                               "1" if r.active else "0", str(int(r.created.timestamp())), r.tags, r.bio]) + "\n")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "init":
        if os.path.abspath(sys.argv[2]) != os.path.abspath(DATA):
            sys.exit("init: DIR must equal APP_DATA (set it to DIR)")
        if os.path.exists(os.path.join(DATA, "rows.sqlite3")):
            sys.exit(f"init: {DATA}/rows.sqlite3 exists")
        init(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else MAX_ROWS)
        print(f"init: {DATA}: rows.sqlite3, rows.tsv")
    else:
        sys.exit(__doc__)
