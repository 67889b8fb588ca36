# Web terminal (web/): npm ci + esbuild into web/dist/, which the Go package
# web embeds (a clean checkout without npm still builds: it embeds a
# placeholder page). Browser tests drive Debian's chromium with playwright-core.
NPM := $(shell command -v npm 2>/dev/null)
WEB_SRC := $(wildcard web/src/*) web/build.mjs web/package.json web/package-lock.json

ifneq ($(NPM),)
BUILD_DEPS += web
TEST_EXTRA += web-test
endif

.PHONY: web web-test

web: web/dist/index.html

web/node_modules/.package-lock.json: web/package.json web/package-lock.json
	cd web && $(NPM) ci --no-audit --no-fund
	@touch $@

web/dist/index.html: web/node_modules/.package-lock.json $(WEB_SRC)
	cd web && $(NPM) run build

# The browser test starts its own `hangard dev` from $(BIN) on loopback and
# keeps screenshots in test-artifacts/.
web-test: build
	@mkdir -p test-artifacts
	cd web && HANGAR_BIN_DIR=$(BIN) HANGAR_ARTIFACTS=$(CURDIR)/test-artifacts $(NPM) test
