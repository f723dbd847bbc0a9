"""The Pulumi program that deploys Lookout to Kubernetes, and the tools that prove it without a cluster.

Data flows one way: ``Pulumi.yaml`` + ``Pulumi.<stack>.yaml`` -> ``config.load_settings()`` (a
``Settings`` of one checked group per component) -> ``stack.deploy()`` -> components in
``infra.components``, each built from its group's ``args()`` -> Kubernetes objects. The program
knows the app by its image, ports, probes and environment only: it never imports ``app``.
``python -m infra.manifests --stack dev`` runs the program under Pulumi's mock runtime and writes
every object it declares; ``infra.checks`` holds the cross-object gates the tests run.
"""
