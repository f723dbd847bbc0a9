"""Continuous delivery: the steps and checks that .github/workflows run through make.

Each module is a command (``python -m infra.delivery.<module> --help``) and a library the tests
call directly:

    smoke            HTTP smoke test of a running service (local gunicorn, kind, staging, prod)
    rollout          pulumi up of an image by digest, smoke test, automatic rollback on failure
    preview          pulumi preview as a pull request comment
    pulumi_cli       the few Pulumi CLI calls the pipeline makes, in one place
    image_check      the built image run as Kubernetes runs it (read-only, UID 10001, PID 1)
    e2e              kind: load balancer, image, local-backend stack, and the checks after it
    cluster_checks   Prometheus scrapes the app and loads the rules; Grafana has the dashboards
    loadtest_summary Locust's CSV as a Markdown table judged by the SLO gate ($GITHUB_STEP_SUMMARY)
    workflow_policy  the house rules of .github/workflows (pins, permissions, make targets)
    compose_check    what compose.yaml refers to exists, images are pinned, jobs match the rules
    verdict          the one required check of ci.yml
"""
