# make lint: golangci-lint (.golangci.yml) and terraform fmt of examples/.
# make test runs it. golangci-lint is built once into bin/tools from the Go
# module proxy (GOLANGCI_LINT=/path/to/golangci-lint uses another).
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT ?= $(BIN)/tools/golangci-lint-$(GOLANGCI_LINT_VERSION)

.PHONY: lint lint-go lint-tf

lint: lint-go lint-tf

$(BIN)/tools/golangci-lint-$(GOLANGCI_LINT_VERSION):
	@mkdir -p $(BIN)/tools/build
	GOBIN=$(BIN)/tools/build $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	mv $(BIN)/tools/build/golangci-lint $@

lint-go: $(GOLANGCI_LINT)
	$(GOLANGCI_LINT) run ./...

lint-tf:
	TF_CLI_CONFIG_FILE=/dev/null $(TF) fmt -check -recursive -diff examples/
