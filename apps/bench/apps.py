from django.apps import AppConfig


class BenchConfig(AppConfig):
    """Benchmark commands (bench_ingest, bench_api, bench_storage, bench_alerts, bench_dashboard, bench_import):
    development tooling, installed only where the package is present (the Docker image leaves it out)."""

    name = "apps.bench"
