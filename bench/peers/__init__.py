"""Peers measured in the same run as CommandCenter: Celery + Redis, and Prefect 3 when it installs here.

They live in their own virtualenv (``var/bench-peers-venv``, made by ``python -m bench.peers.install`` from the
``bench-peers`` optional dependency group) so that nothing they pull in can change the service's dependencies.
"""
