variable "broker_public_key" {
  description = "The hangar daemon's broker public key (`hangard keygen` prints it). Null falls back to HANGAR_BROKER_PUBLIC_KEY."
  type        = string
  default     = null
}

resource "hangar_pool" "default" {
  name     = "default"
  app_name = "hangar-default" # created by the provider unless adopt_app = true
  network  = "hangar-default" # isolated 6PN network for the workers
  regions  = ["iad", "ams"]
  image    = "registry.fly.io/hangar-worker:1.0.0"

  guest = {
    cpu_kind  = "shared"
    cpus      = 1
    memory_mb = 2048
  }
  env = {
    LOG_LEVEL = "info"
  }

  min_standby       = 1 # per region
  max_machines      = 10
  standby_mode      = "stop" # or "suspend"
  idle_timeout      = "15m"
  session_ttl       = "4h"
  agent_port        = 8080
  broker_public_key = var.broker_public_key
  force_destroy     = false
}
