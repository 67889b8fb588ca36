# Terraform provider (provider/, main.go): registry docs and running the
# examples by hand against the local Fly emulator.
#
#   make docs               regenerate docs/index.md, docs/resources, docs/data-sources
#   make docs-check         fail if those are stale (regenerates into bin/docs-check)
#   make provider-example   apply an example with the dev_overrides CLI config
#                           (EXAMPLE=examples/quickstart by default; FLY_API_URL
#                           etc. must point at a running `hangard flyemu`)
#   make provider-smoke     start `hangard flyemu`, apply and destroy the
#                           quickstart and the registry examples, stop it
.PHONY: provider-example provider-example-destroy provider-smoke

TEST_EXTRA += docs-check

# tfplugindocs runs from the module cache when it is there (offline, about
# 5 s), else through the module proxy (the first run downloads and builds it).
TFPLUGINDOCS_PKG := github.com/hashicorp/terraform-plugin-docs/cmd/tfplugindocs@v0.25.0
TFPLUGINDOCS = { GOFLAGS=-mod=mod GOPROXY=file://$$($(GO) env GOMODCACHE)/cache/download GOSUMDB=off $(GO) run $(TFPLUGINDOCS_PKG) --help >/dev/null 2>&1 \
	  && GOFLAGS=-mod=mod GOPROXY=file://$$($(GO) env GOMODCACHE)/cache/download GOSUMDB=off $(GO) run $(TFPLUGINDOCS_PKG) "$$@" \
	  || $(GO) run $(TFPLUGINDOCS_PKG) "$$@"; }
TF           ?= terraform
EXAMPLE      ?= examples/quickstart
TFRC         := $(BIN)/terraform.rc

# The provider's schema as tfplugindocs reads it. We export it ourselves
# through the dev_overrides CLI config rather than let tfplugindocs run
# `terraform init` with its own plugin dir: that works with Terraform and with
# OpenTofu alike (which names the provider under its own registry host), and
# needs no registry. tfplugindocs looks the schema up as hashicorp/hangar.
PROVIDER_SCHEMA := $(BIN)/provider-schema.json
$(PROVIDER_SCHEMA): build
	@rm -rf $(BIN)/schema-export && mkdir -p $(BIN)/schema-export
	@printf 'terraform {\n  required_providers {\n    hangar = { source = "hangarhq/hangar" }\n  }\n}\n' > $(BIN)/schema-export/main.tf
	@printf 'provider_installation {\n  dev_overrides {\n    "hangarhq/hangar" = "%s"\n  }\n  direct {}\n}\n' "$(BIN)" > $(BIN)/schema-export/terraform.rc
	@cd $(BIN)/schema-export && TF_CLI_CONFIG_FILE=terraform.rc $(TF) providers schema -json 2>/dev/null \
	  | sed 's#"registry\.[a-z.]*/hangarhq/hangar"#"registry.terraform.io/hashicorp/hangar"#' > $@.tmp
	@grep -q '"registry.terraform.io/hashicorp/hangar"' $@.tmp || { echo "could not export the provider schema with $(TF)"; rm -f $@.tmp; exit 1; }
	@mv $@.tmp $@ && rm -rf $(BIN)/schema-export

.PHONY: $(PROVIDER_SCHEMA)

docs: $(PROVIDER_SCHEMA)
	@set -- generate --provider-name hangar --providers-schema $(PROVIDER_SCHEMA); $(TFPLUGINDOCS)

docs-check: $(PROVIDER_SCHEMA)
	@rm -rf $(BIN)/docs-check && mkdir -p $(BIN)/docs-check
	@set -- generate --provider-name hangar --providers-schema $(PROVIDER_SCHEMA) --rendered-website-dir bin/docs-check/docs; $(TFPLUGINDOCS) >/dev/null
	@for d in index.md resources data-sources; do \
	  diff -ru docs/$$d $(BIN)/docs-check/docs/$$d || { echo "docs/ is stale: run make docs and commit the result"; exit 1; }; \
	done
	@rm -rf $(BIN)/docs-check
	@echo "provider docs are up to date"

# The whole-config form of the registry examples (provider + pool + tenant
# image + data source), assembled into bin/example-registry.
$(BIN)/example-registry: examples/provider/provider.tf examples/resources/*/resource.tf examples/data-sources/*/data-source.tf
	@rm -rf $@ && mkdir -p $@
	cp examples/provider/provider.tf $@/provider.tf
	for f in examples/resources/*/resource.tf; do cp $$f $@/$$(basename $$(dirname $$f)).tf; done
	for f in examples/data-sources/*/data-source.tf; do cp $$f $@/data_$$(basename $$(dirname $$f)).tf; done

# Applies $(EXAMPLE) with the provider from bin/ through dev_overrides (no
# terraform init needed). Needs FLY_API_URL, FLY_API_TOKEN (if the emulator
# checks one) and HANGAR_BROKER_PUBLIC_KEY in the environment.
provider-example: tfrc
	@test -n "$$FLY_API_URL" || { echo "set FLY_API_URL to a running 'hangard flyemu' (e.g. http://127.0.0.1:4280)"; exit 1; }
	TF_CLI_CONFIG_FILE=$(TFRC) $(TF) -chdir=$(EXAMPLE) apply -auto-approve -input=false

provider-example-destroy: tfrc
	TF_CLI_CONFIG_FILE=$(TFRC) $(TF) -chdir=$(EXAMPLE) destroy -auto-approve -input=false

# A fixed, well-formed broker public key: standbys in stop mode never start
# an agent, so no daemon needs the private half.
SMOKE_BROKER_KEY := AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=

provider-smoke: tfrc $(BIN)/example-registry
	@set -euo pipefail; tmp=$$(mktemp -d); \
	$(BIN)/hangard flyemu --listen 127.0.0.1:0 --token smoke-token >$$tmp/url 2>$$tmp/flyemu.log & pid=$$!; \
	trap 'kill $$pid 2>/dev/null; wait $$pid 2>/dev/null; rm -rf $$tmp' EXIT; \
	for i in $$(seq 100); do [ -s $$tmp/url ] && break; sleep 0.1; done; \
	export FLY_API_URL=$$(head -1 $$tmp/url) FLY_API_TOKEN=smoke-token FLY_ORG=personal HANGAR_BROKER_PUBLIC_KEY=$(SMOKE_BROKER_KEY) HANGAR_DAEMON_URL=$${HANGAR_DAEMON_URL:-http://127.0.0.1:7780} TF_CLI_CONFIG_FILE=$(TFRC); \
	echo "flyemu at $$FLY_API_URL"; \
	for ex in examples/quickstart $(BIN)/example-registry; do \
	  rm -rf $$tmp/ex && cp -r $$ex $$tmp/ex; \
	  echo "== apply $$ex"; $(TF) -chdir=$$tmp/ex apply -auto-approve -input=false -no-color | tail -n 8; \
	  $(TF) -chdir=$$tmp/ex plan -input=false -no-color >$$tmp/plan; \
	  grep -qE 'No changes\.|without changing any real infrastructure' $$tmp/plan || { cat $$tmp/plan; echo "$$ex: plan after apply wants to change resources"; exit 1; }; \
	  echo "== destroy $$ex"; $(TF) -chdir=$$tmp/ex destroy -auto-approve -input=false -no-color | tail -n 1; \
	done
