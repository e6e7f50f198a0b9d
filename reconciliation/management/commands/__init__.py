"""`manage.py recon_*`: each scheduled job, runnable by hand."""
