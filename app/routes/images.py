"""Image files of the atlas, confined to its ``images/`` folder."""

from fastapi import APIRouter
from fastapi.responses import FileResponse

from app.deps import AtlasDep

router = APIRouter(tags=["images"])


@router.get("/images/{path:path}")
def image(path: str, atlas: AtlasDep) -> FileResponse:
    return FileResponse(atlas.image_file(f"images/{path}"), headers={"Cache-Control": "max-age=3600"})
