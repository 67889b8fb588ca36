# Worker image (hangar-agent + pinned Claude Code): scripts/worker-image.sh
# builds workerimage/Dockerfile with docker when an engine answers, else with
# buildah (installed from apt when missing), on a base assembled offline when
# no registry is reachable. Cached by content: an unchanged rebuild only checks.
#   make worker-image                                   hangar-worker:dev, local
#   make worker-image WORKER_IMAGE=registry.fly.io/<app>/hangar-worker:<tag>   + push
WORKER_IMAGE ?= hangar-worker:dev
# How long make test waits for a (cold) build of the test image.
WORKER_IMAGE_TIMEOUT ?= 30m

.PHONY: worker-image
worker-image:
	WORKER_IMAGE=$(WORKER_IMAGE) scripts/worker-image.sh

# make test runs the worker image's tests (internal/workerimagetest, the
# daemon's session on the image): build or check the cached image first, so
# that a cold build (minutes) is not charged to a test's timeout. Not root:
# those tests skip, and so does this. The same name and key as the tests
# (internal/workerimagetest). Bounded: a stalled download fails make test
# instead of hanging it; timeout kills the build's whole process group (the
# cache's lock is then free for the next run).
.PHONY: test-worker-image
test-worker-image:
	@if [ "$$(id -u)" = 0 ]; then WORKER_IMAGE=hangar-worker:test WORKER_IMAGE_KEYED=1 WORKER_BUILDER=buildah \
	  timeout --kill-after=1m $(WORKER_IMAGE_TIMEOUT) scripts/worker-image.sh >/dev/null; \
	else echo "not root: the worker image tests skip"; fi

go-test: test-worker-image
