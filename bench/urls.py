"""The benchmark-only routes, mounted by config/urls.py when settings.BENCH_ENDPOINTS is on."""

from django.urls import path

from bench.views import ConstantView

urlpatterns = [
    path("constant", ConstantView.as_view(), name="bench-constant"),
]
