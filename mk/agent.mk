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
