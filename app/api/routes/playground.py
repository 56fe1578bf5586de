"""The playground at ``/``: a small page to train, watch, predict and generate from a browser.

Plain HTML, CSS and JavaScript shipped inside the package (``app/api/static/playground``)
and served by the app itself, so it works with no internet. The page only talks to the
public API, exactly as any other client would.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(__file__).resolve().parent.parent / "static" / "playground"
ASSETS_URL = "/static/playground"

router = APIRouter(include_in_schema=False)


@router.get("/")
def playground() -> FileResponse:
    """The playground page."""
    return FileResponse(ASSETS / "index.html", media_type="text/html")


def install_playground(app: FastAPI) -> None:
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), name="playground-assets")
    app.include_router(router)
