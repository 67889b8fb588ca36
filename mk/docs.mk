# make docs also rewrites the settings table of docs/operations.md from
# daemon/config/settings.go; its test (TestDocTable, in make test) fails
# while the table is stale.
.PHONY: docs-settings
docs: docs-settings

docs-settings:
	$(GO) test -count=1 ./daemon/config -run '^TestDocTable$$' -args -update
