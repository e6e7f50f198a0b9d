"""Django app config for `reconciliation`: registers the writer behind `core.breaks` and the
breaks' and job runs' gauges."""

from django.apps import AppConfig


class ReconciliationConfig(AppConfig):
    name = "reconciliation"

    def ready(self) -> None:
        from core.breaks import register_break_writer
        from reconciliation.services import breaks_open

        register_break_writer(lambda specs: breaks_open(specs=specs))
        _register_gauges()


def _register_gauges() -> None:
    from core.metrics import gauge_register
    from reconciliation import selectors

    def job_runs() -> list[tuple[tuple[str, str], float]]:
        return [((run["job"], measure), value) for run in selectors.latest_job_runs()
                for measure, value in (
                    ("examined", run["examined"]), ("fixed", run["fixed"]),
                    ("broken", run["broken"]), ("failed", int(run["error"] != "")),
                    ("age_seconds", run["age"].total_seconds()))]

    gauge_register("clearhouse_reconciliation_breaks_open", "Open reconciliation breaks by type",
                   ["type"], lambda: [((kind,), count)
                                      for kind, count in selectors.open_break_counts()])
    gauge_register("clearhouse_job_last_run", "The latest run of each scheduled job",
                   ["job", "measure"], job_runs)
