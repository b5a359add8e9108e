"""Tests of boundkit.django: the middleware and the health view in a minimal Django project."""

from __future__ import annotations

import json
from typing import Any

import pytest

from boundkit.web import default_monitor

django = pytest.importorskip("django")

SECRET = "hunter2-not-for-health"


def item(request: Any, pk: int) -> Any:
    from django.http import HttpResponse

    return HttpResponse(f"item {pk}")


def boom(request: Any) -> Any:
    raise RuntimeError("boom")


def busy(request: Any) -> Any:
    from boundkit import AdmissionTimeout

    raise AdmissionTimeout("no room for 150.0 MiB within 5 s", retry_after=5)


def _urlpatterns() -> list[Any]:
    from django.urls import path

    from boundkit.django import health

    return [
        path("items/<int:pk>", item),
        path("boom", boom),
        path("busy", busy),
        path("health", health),
    ]


@pytest.fixture(scope="module")
def client() -> Any:
    """A Django test client for a project configured in this process (no manage.py)."""
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            ALLOWED_HOSTS=["testserver"],
            ROOT_URLCONF=__name__,
            MIDDLEWARE=["boundkit.django.MemoryGuardMiddleware"],
            SECRET_KEY=SECRET,
            LOGGING_CONFIG=None,
        )
        django.setup()
    from django.test import Client

    return Client(raise_request_exception=False)


urlpatterns: list[Any] = []


@pytest.fixture(autouse=True)
def _no_admission_table(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """An earlier test's admission table (same process group) must not reach /health here."""
    from boundkit.admission import ENV_ADMISSION_FILE

    monkeypatch.setenv(ENV_ADMISSION_FILE, str(tmp_path / "admission"))


@pytest.fixture(autouse=True)
def _urls() -> None:
    urlpatterns[:] = _urlpatterns()


def test_requests_are_recorded_by_url_pattern(client: Any) -> None:
    """Requests are named by their URL pattern, so item ids do not multiply the routes."""
    before = default_monitor().stats.summary()["routes"]
    start = before.get("items/<int:pk>", {}).get("requests", 0)
    for pk in (1, 2, 3):
        assert 200 == client.get(f"/items/{pk}").status_code
    assert 500 == client.get("/boom").status_code
    routes = default_monitor().stats.summary()["routes"]
    assert start + 3 == routes["items/<int:pk>"]["requests"]
    assert "/items/1" not in routes
    assert routes["boom"]["statuses"]["500"] >= 1


def test_health_view_answers_json_without_secrets(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The health view serves the shared monitor's JSON, and no secret appears in it."""
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{SECRET}@db/app")
    client.get("/items/7")
    response = client.get("/health")
    assert 200 == response.status_code
    assert "application/json" == response["Content-Type"]
    assert SECRET not in response.content.decode()
    payload = json.loads(response.content)
    assert {"status", "memory", "guard", "requests", "caches", "pools"} == set(payload)
    assert payload["requests"]["routes"]["items/<int:pk>"]["requests"] >= 1


def test_admission_timeout_answers_503_with_retry_after(client: Any) -> None:
    """A view whose reservation timed out answers 503 with Retry-After, counted as a 503."""
    response = client.get("/busy")
    assert 503 == response.status_code
    assert "5" == response["Retry-After"]
    assert 5 == json.loads(response.content)["retry_after"]
    assert default_monitor().stats.summary()["routes"]["busy"]["statuses"]["503"] >= 1
