"""Development-only values that live in this repository: the settings use them as defaults for
`make run` and the tests, and the deploy checks (core/checks.py) refuse them in production."""

DEV_SECRET_KEY = "dev-insecure-secret-key-change-me"  # noqa: S105 - dev only, refused by checks
DEMO_API_KEY = "sk_test_demo_4eC39HqLyjWDarjtT1zdp7dc"
DEMO_ADMIN_PASSWORD = "clearhouse-demo"  # noqa: S105 - `make run` demo login only
# .env.example's placeholders all say so; a secret that still does was never replaced.
PLACEHOLDER_MARK = "change-me"
# Ed25519 seed that signs ledger checkpoints in `make run` and the tests (ledger/checkpoints.py).
DEV_LEDGER_CHECKPOINT_KEY = "4c6564676572206465762073656564206f6e6c7920d1c3a9b5e7f20468ac13e5"
