# make chaos: real hangard processes against the Fly emulator (real agents)
# under kill -9 loops (SQLite; two replicas on Postgres), Fly faults before
# and after Fly acts, a frozen agent, a partitioned worker and store faults;
# prints a table (also in test-artifacts/chaos.txt). Minutes, not hours:
# every loop is bounded by CHAOS_ROUNDS. Not part of make test.
# CHAOS_FLAGS passes more, e.g. make chaos CHAOS_FLAGS="-chaos.only sqlite,pg -chaos.seed 7".
CHAOS_ROUNDS ?= 5
CHAOS_FLAGS ?=

.PHONY: chaos

chaos:
	@mkdir -p test-artifacts
	HANGAR_ARTIFACTS=$(CURDIR)/test-artifacts $(GO) test -tags chaos -count=1 -v -timeout 40m -run TestChaos ./test/chaos \
		-args -chaos.rounds $(CHAOS_ROUNDS) $(CHAOS_FLAGS)
