# make bench: hangar-bench starts `hangard dev` (real binary; the emulator in
# namespace mode when root) and prints one table: echo latency, attach latency
# and bulk throughput through the daemon over the agent's dial-home tunnel,
# through the daemon dialling the agent (a pool without daemon_url, the design
# before tunnels), straight to the agent (the reference every ratio is set
# against) and through a bare relay; session-ready latency from stopped and
# suspended standbys of both designs; and the daemon's RSS, OS threads and
# goroutines per attached idle stream at each --streams count.
# BENCH_FLAGS passes flags, e.g.
#   make bench BENCH_FLAGS="--streams 200,1000 --samples 500 --ready-samples 3"
BENCH_FLAGS ?=

bench: build
	$(GO) build -o $(BIN)/hangar-bench ./bench/cmd/hangar-bench
	$(BIN)/hangar-bench --hangard $(BIN)/hangard $(BENCH_FLAGS)
