# make demo: the whole stack locally (hangard dev + Fly emulator + quickstart
# pool + a session on a demo repo), see scripts/demo.sh. Claude Code (the
# worker image's pin) is installed once into .demo/claude/ on Node 22 fetched
# from npm (HANGAR_DEMO_CLAUDE=0 skips it). As root the pool runs on the
# worker image, built once and cached (HANGAR_DEMO_IMAGE=0: local processes).
# demo-test runs the demo without Claude Code and checks that Ctrl-C leaves
# no process; it downloads nothing.
.PHONY: demo demo-test

demo: build
	@scripts/demo.sh

demo-test: build
	scripts/demo-test.sh

TEST_EXTRA += demo-test
