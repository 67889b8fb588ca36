variable "broker_public_key" {
  description = "The hangar daemon's broker public key (`hangard keygen` prints it). Null falls back to HANGAR_BROKER_PUBLIC_KEY."
  type        = string
  default     = null
}

variable "daemon_url" {
  description = "Public URL of the hangar daemon that workers dial home to, like https://hangar.example.com. Null falls back to HANGAR_DAEMON_URL; required with network."
  type        = string
  default     = null
}

resource "hangar_pool" "default" {
  name     = "default"
  app_name = "hangar-default" # created by the provider unless adopt_app = true
  regions  = ["iad", "ams"]
  image    = "registry.fly.io/hangar-worker:1.0.0"

  # One isolated 6PN network per tenant pool: its workers reach the daemon's
  # public URL and the internet, not other apps or the org's default network.
  network    = "hangar-default"
  daemon_url = var.daemon_url # workers dial it; the daemon never connects to them

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
