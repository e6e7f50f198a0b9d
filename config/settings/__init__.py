"""Settings split by environment: base, local, production and test (cookiecutter-django style)."""
