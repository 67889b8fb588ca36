resource "hangar_tenant_image" "acme" {
  name        = "acme-node22"
  pool        = hangar_pool.default.name
  tenant      = "acme"
  image       = "registry.fly.io/acme-worker:2.3"
  min_standby = 1

  # With sessions of this image still running, destroy refuses unless this is
  # true; even then it removes only the template and standbys and leaves the
  # running sessions to end on their own.
  force_destroy = false

  # Optional overrides of the pool's settings.
  guest = {
    cpu_kind  = "performance"
    cpus      = 1
    memory_mb = 4096
  }
  env = {
    NODE_VERSION = "22"
  }
}
