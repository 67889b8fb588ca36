# make fuzz: run each `go test -fuzz` target for FUZZTIME (default 60s), one
# after another (each fuzzer uses every core). Their seed corpora live in
# testdata/fuzz/<target>/ beside the code and run as ordinary tests in
# make test. FUZZFLAGS passes more flags, e.g. FUZZFLAGS=-parallel=2.
FUZZTIME  ?= 60s
FUZZFLAGS ?=
FUZZ_TARGETS := \
	./internal/wire:FuzzDecode \
	./daemon/broker:FuzzAttachFrame \
	./daemon/server:FuzzDecodeRequest \
	./internal/api:FuzzCreateSessionRequest \
	./internal/validate:FuzzRepoURL \
	./internal/validate:FuzzBranch \
	./internal/agentauth:FuzzVerify

.PHONY: fuzz

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "== $$fn in $$pkg for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) $(FUZZFLAGS) $$pkg; \
	done
