"""Every admin page, one module per app whose tables it shows. The admin is the back-office, so
it lives in the top layer and may call any app's services; the apps themselves have no admin
module and never import the back-office (the import-linter layers contract in pyproject.toml).

Django's autodiscovery imports this package; importing the modules registers their admins.
"""

from backoffice.admin import (  # noqa: F401  (each module registers its admins)
    bank,
    break_queue,
    core,
    ledger,
    payments,
    providers,
    reconciliation,
    staff,
    wallet,
    webhooks,
)
