"""The API's browsable docs at `/v0/docs`, served whole by the api: Swagger UI's assets come
from the `swagger-ui-bundle-v2` package (no CDN, so the page works offline), and its OAuth2
redirect page stays under `/v0/docs`."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse
from swagger_ui_bundle import swagger_ui_path

DOCS = "/v0/docs"
ASSETS = f"{DOCS}/assets"
OAUTH2_REDIRECT = f"{DOCS}/oauth2-redirect"
# What the page loads, and nothing else of the package (its source maps, its own index).
SERVED = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
ROUTES = (f"GET {DOCS}", f"GET {OAUTH2_REDIRECT}", f"GET {ASSETS}/{{name}}")


def add_docs(app: FastAPI, openapi_url: str) -> None:
    """The docs page, its OAuth2 redirect and its assets, left out of the OpenAPI document."""

    @app.get(DOCS, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - API docs",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
            oauth2_redirect_url=OAUTH2_REDIRECT,
        )

    @app.get(OAUTH2_REDIRECT, include_in_schema=False)
    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(f"{ASSETS}/{{name}}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        media_type = SERVED.get(name)
        if media_type is None:
            raise HTTPException(status_code=404)
        headers = {"Cache-Control": "public, max-age=86400"}
        return FileResponse(swagger_ui_path / name, media_type=media_type, headers=headers)
