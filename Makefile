# One command surface for README, pre-commit and CI.
#   make demo   - set up, start the embedded stack, simulate traffic, print what was stored, stop
#   make test   - set up, lint, and run the whole test suite against a real broker and a real PostgreSQL
#   make up     - set up and run the embedded stack until Ctrl-C
#   make lint   - ruff (lint, and the format of the package) + mypy --strict; part of `make test`
#   make bench  - ingest benchmark (1,000,000 events by default; BENCH_EVENTS=... to change)
#   make kafka-broker - Java 17 + Maven where missing, then the Apache Kafka broker jars (for --kafka apache)
#   make oidc-provider - Java 17 + Maven where missing, then an OpenID Connect provider for the sign-on tests
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The Apache Kafka release of the local clusters; deploy/kafka/pom.xml, docker-compose.yml and
# pipeline/stack/cluster.py pin the same one (tests/stack/test_cluster.py checks it).
KAFKA_VERSION := $(shell sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' deploy/kafka/pom.xml)
KAFKA_HOME    := $(HOME)/.cache/roomlogs/kafka-$(KAFKA_VERSION)
# The single sign-on tests' OpenID Connect provider (tests/api/oidc_provider.py reads the same pom).
OIDC_VERSION  := $(shell sed -n 's:.*<mock-oauth2-server.version>\(.*\)</mock-oauth2-server.version>.*:\1:p' deploy/oidc/pom.xml)
OIDC_HOME     := $(HOME)/.cache/roomlogs/mock-oauth2-server-$(OIDC_VERSION)

.PHONY: setup demo up test lint bench clean prometheus-tools java-tools kafka-broker oidc-provider \
        postgres-tls-server browser-tools caddy-tools

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# promtool and prometheus for the alert-rule tests and the real-scrape test (Debian's package).
prometheus-tools:
	@command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; }

# A PostgreSQL server built with OpenSSL for the TLS tests (the embedded wheel's has no TLS): Debian's.
postgres-tls-server:
	@ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	      postgresql; }

# Java 17 (runs the broker) and Maven (fetches it), Debian's packages, only when missing.
java-tools:
	@command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1 || \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	      openjdk-17-jre-headless maven; }

# Fetched jars are marked by their pom's content, not its time: a fresh clone (every file new) finds the jars a
# run from another clone fetched, instead of deleting them under a test run that is using them. A new pom is
# fetched beside the old jars, which are replaced only when they differ.
KAFKA_POM_SUM := $(shell sha256sum deploy/kafka/pom.xml | cut -c1-16)
OIDC_POM_SUM  := $(shell sha256sum deploy/oidc/pom.xml | cut -c1-16)

# The Apache Kafka broker and its runtime dependencies from Maven Central, into $(KAFKA_HOME)/libs.
kafka-broker: $(KAFKA_HOME)/.fetched-$(KAFKA_POM_SUM)

$(KAFKA_HOME)/.fetched-$(KAFKA_POM_SUM): | java-tools
	rm -rf $(KAFKA_HOME)/libs.new
	mvn -q -B -Dstyle.color=never -f deploy/kafka/pom.xml dependency:copy-dependencies -DincludeScope=runtime \
	  -DoutputDirectory=$(KAFKA_HOME)/libs.new
	diff -rq $(KAFKA_HOME)/libs.new $(KAFKA_HOME)/libs >/dev/null 2>&1 && rm -rf $(KAFKA_HOME)/libs.new || \
	  { rm -rf $(KAFKA_HOME)/libs && mv $(KAFKA_HOME)/libs.new $(KAFKA_HOME)/libs; }
	touch $@

# no.nav.security:mock-oauth2-server and its runtime dependencies from Maven Central, into $(OIDC_HOME)/libs:
# a real OpenID Connect provider the single sign-on tests run (tests/api/test_oidc_sign_in.py).
oidc-provider: $(OIDC_HOME)/.fetched-$(OIDC_POM_SUM)

$(OIDC_HOME)/.fetched-$(OIDC_POM_SUM): | java-tools
	rm -rf $(OIDC_HOME)/libs.new
	mvn -q -B -Dstyle.color=never -f deploy/oidc/pom.xml dependency:copy-dependencies -DincludeScope=runtime \
	  -DoutputDirectory=$(OIDC_HOME)/libs.new
	diff -rq $(OIDC_HOME)/libs.new $(OIDC_HOME)/libs >/dev/null 2>&1 && rm -rf $(OIDC_HOME)/libs.new || \
	  { rm -rf $(OIDC_HOME)/libs && mv $(OIDC_HOME)/libs.new $(OIDC_HOME)/libs; }
	touch $@

# Debian's caddy for the test of the deployment's TLS proxy (deploy/caddy/Caddyfile), only when missing.
caddy-tools:
	@command -v caddy >/dev/null 2>&1 || \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends caddy; }

# Debian's Chromium for the room console's browser tests (driven by Playwright with the system browser;
# no browser download), only when missing.
browser-tools:
	@command -v chromium >/dev/null 2>&1 || \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	      chromium fonts-dejavu-core; }

demo: setup
	$(BIN)/roomlogs demo

up: setup
	$(BIN)/roomlogs up

test: lint prometheus-tools kafka-broker oidc-provider postgres-tls-server browser-tools caddy-tools
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check pipeline tests bench
	$(BIN)/ruff format --check pipeline
	$(BIN)/mypy

bench: setup
	$(BIN)/python bench/ingest.py --events $${BENCH_EVENTS:-1000000}

clean:
	rm -rf .roomlogs .pytest_cache .mypy_cache .ruff_cache
