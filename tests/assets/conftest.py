"""Asset tests share the instance, data folder and token fixtures of ``tests/conftest.py``."""
