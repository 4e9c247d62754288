"""Datasette (unmodified, from PyPI: scripts/requirements-bench.txt) over the rows of djangoapp.py,
as an ASGI app for gunicorn's uvicorn worker (scripts/bench-servers):

    APP_DATA=DIR gunicorn -k uvicorn.workers.UvicornWorker datasetteapp:app

DIR/rows.sqlite3 is made by `djangoapp.py init`; it is served read-only (immutable), as a
published data set is. One canned query gives pages of rows:
    /rows/page.json?offset=O&limit=N&_shape=array   N rows (1..5000) as a JSON array
max_returned_rows is raised to 5000 (the default, 1000, would cut the pages short).
"""
import os

from datasette.app import Datasette

DATA = os.environ.get("APP_DATA", os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
MAX_ROWS = 5000

app = Datasette(
    immutables=[os.path.join(DATA, "rows.sqlite3")],
    settings={"max_returned_rows": MAX_ROWS, "sql_time_limit_ms": 5000},
    metadata={"databases": {"rows": {"queries": {"page": {
        "sql": "select * from benchrows_row order by id limit :limit offset :offset",
    }}}}},
).app()
