# make fly-load: the load figure against Fly's rate limits (issue 10). Drives
# FLY_LOAD_SESSIONS sessions at once through one pool of the Fly emulator,
# which enforces Fly's limits, with one and two replicas on Postgres, and
# prints sessions ready per minute, 429s, failed claims and ready latency.
FLY_LOAD_SESSIONS ?= 60

.PHONY: fly-load
fly-load: build
	HANGAR_FLY_LOAD=$(FLY_LOAD_SESSIONS) HANGAR_BIN_DIR=$(BIN) $(GO) test -count=1 -timeout 30m \
		-run '^TestFlyLoad$$' -v ./daemon/service/ | grep -E 'fly-load:|^(---|ok|FAIL|PASS)'
