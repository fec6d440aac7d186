"""Peers measured in the same run as CommandCenter: Celery + Redis, Prefect 3 and DBOS Transact.

They live in their own virtualenv (``var/bench-peers-venv``, made by ``python -m bench.peers.install`` from the
``bench-peers`` optional dependency group) so that nothing they pull in can change the service's dependencies.
"""
