"""The benchmark of collector against raw RQ and Celery (`python bench/run.py`)."""
