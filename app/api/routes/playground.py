"""The playground at ``/`` (train, watch, predict and generate from a browser) and the runs
dashboard at ``/dashboard`` (every job, curves compared, models' versions and files).

Plain HTML, CSS and JavaScript shipped inside the package (``app/api/static/playground``
and ``app/api/static/dashboard``) and served by the app itself, so they work with no
internet. The pages only talk to the public API, exactly as any other client would.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent.parent / "static"
ASSETS = STATIC / "playground"
ASSETS_URL = "/static/playground"
DASHBOARD_ASSETS = STATIC / "dashboard"
DASHBOARD_URL = "/static/dashboard"

router = APIRouter(include_in_schema=False)


@router.get("/")
def playground() -> FileResponse:
    """The playground page."""
    return FileResponse(ASSETS / "index.html", media_type="text/html")


@router.get("/dashboard")
def dashboard() -> FileResponse:
    """The runs dashboard page."""
    return FileResponse(DASHBOARD_ASSETS / "index.html", media_type="text/html")


def install_playground(app: FastAPI) -> None:
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), name="playground-assets")
    app.mount(DASHBOARD_URL, StaticFiles(directory=DASHBOARD_ASSETS), name="dashboard-assets")
    app.include_router(router)
