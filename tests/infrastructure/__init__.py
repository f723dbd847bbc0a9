"""Tests of the Pulumi program in infra/: components under mocks, rendered manifests and their gates."""
