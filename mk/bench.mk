# make bench: hangar-bench starts `hangard dev` (real binary, loopback) and
# prints echo latency and bulk throughput through the daemon versus straight
# to the agent, session-ready latency from stopped and suspended standbys,
# and the daemon's RSS and threads per attached idle stream.
# BENCH_FLAGS passes flags, e.g. make bench BENCH_FLAGS="--streams 200 --samples 500".
BENCH_FLAGS ?=

bench: build
	$(GO) build -o $(BIN)/hangar-bench ./bench/cmd/hangar-bench
	$(BIN)/hangar-bench --hangard $(BIN)/hangard $(BENCH_FLAGS)
