"""Load tests of the Lookout service with Locust: personas, shapes, the SLO gate, capacity.

Entry points: ``loadtests/locustfile.py`` (Locust), ``python -m loadtests.run`` (make loadtest),
``python -m loadtests.capacity`` (make capacity). See loadtests/README.md.
"""
