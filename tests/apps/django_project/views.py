"""A page, JSON, a form POST (with its CSRF token) and a streamed response."""

from __future__ import annotations

from collections.abc import Iterator

from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    JsonResponse,
    StreamingHttpResponse,
)
from django.middleware.csrf import get_token


def home(request: HttpRequest) -> HttpResponse:
    return HttpResponse("Hello from Django", content_type="text/plain")


def item(request: HttpRequest, item_id: int) -> HttpResponse:
    return JsonResponse({"id": item_id, "q": request.GET.get("q")})


def form(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        # The token for the POST, set as a cookie by the CSRF middleware.
        return JsonResponse({"csrftoken": get_token(request)})
    if request.method != "POST":
        return HttpResponseNotAllowed(["GET", "POST"])
    upload = request.FILES.get("file")
    return JsonResponse(
        {
            "name": request.POST.get("name"),
            "size": upload.size if upload is not None else None,
        }
    )


def stream(request: HttpRequest) -> StreamingHttpResponse:
    count = int(request.GET.get("count", "5"))

    def lines() -> Iterator[str]:
        for i in range(count):
            yield f"row {i}\n"

    return StreamingHttpResponse(lines(), content_type="text/plain")
