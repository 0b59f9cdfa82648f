"""An upload form: an HTML page that posts files, and a handler that stores them.

python examples/upload_form.py         # http://127.0.0.1:8000/
"""

from __future__ import annotations

import html
import tempfile
from pathlib import Path

import aserve

UPLOAD_DIR = Path(tempfile.gettempdir()) / "aserve-uploads"

app = aserve.App()

PAGE = """<!doctype html>
<title>Upload</title>
<form method="post" action="/upload" enctype="multipart/form-data">
  <input name="note" placeholder="a note">
  <input type="file" name="files" multiple>
  <button>Upload</button>
</form>
"""


@app.get("/")
async def form_page(request: aserve.Request) -> aserve.Response:
    return aserve.HTMLResponse(PAGE)


@app.post("/upload")
async def upload(request: aserve.Request) -> aserve.Response:
    form = await request.form(max_files=10, max_size=50 * 1024 * 1024)
    UPLOAD_DIR.mkdir(exist_ok=True)
    rows = []
    for upload in form.getall("files"):
        if not isinstance(upload, aserve.UploadFile) or not upload.filename:
            continue
        # Never use the client's file name as a path: keep its last part only.
        name = Path(upload.filename.replace("\\", "/")).name or "upload"
        with open(UPLOAD_DIR / name, "wb") as out:
            while chunk := await upload.read(64 * 1024):
                out.write(chunk)
        rows.append(f"<li>{html.escape(name)}: {upload.size} bytes</li>")
    note = form.get("note", "")
    return aserve.HTMLResponse(
        f"<p>Note: {html.escape(str(note))}</p><ul>{''.join(rows)}</ul>", status=201
    )


if __name__ == "__main__":
    aserve.run(app, port=8000)
