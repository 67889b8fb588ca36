# Worker image (hangar-agent + pinned Claude Code): scripts/worker-image.sh
# builds workerimage/Dockerfile with docker when an engine answers, else with
# buildah (installed from apt when missing), on a base assembled offline when
# no registry is reachable. Cached by content: an unchanged rebuild only checks.
#   make worker-image                                   hangar-worker:dev, local
#   make worker-image WORKER_IMAGE=registry.fly.io/<app>/hangar-worker:<tag>   + push
WORKER_IMAGE ?= hangar-worker:dev

.PHONY: worker-image
worker-image:
	WORKER_IMAGE=$(WORKER_IMAGE) scripts/worker-image.sh

# make test runs the worker image's tests (internal/workerimagetest, the
# daemon's session on the image): build or check the cached image first, so
# that a cold build (minutes) is not charged to a test's timeout. Not root:
# those tests skip, and so does this.
.PHONY: test-worker-image
test-worker-image:
	@if [ "$$(id -u)" = 0 ]; then WORKER_IMAGE=hangar-worker:test WORKER_BUILDER=buildah scripts/worker-image.sh >/dev/null; \
	else echo "not root: the worker image tests skip"; fi

go-test: test-worker-image
