# Worker image (hangar-agent + pinned Claude Code). Needs a Docker engine;
# not part of build or test.
WORKER_IMAGE ?= hangar-worker:dev

.PHONY: worker-image
worker-image:
	docker build -f workerimage/Dockerfile -t $(WORKER_IMAGE) .
