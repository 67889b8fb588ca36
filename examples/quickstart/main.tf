# The whole hangar stack's capacity for `make demo`: one pool in one region
# with one warm standby, against the local Fly emulator started by
# `hangard dev` (or `hangard flyemu`). The emulator runs hangar-agent for
# any image it has no mapping for, so the image name only has to be stable.
#
# The provider reads FLY_API_URL, FLY_API_TOKEN and FLY_ORG, and the pool's
# broker key HANGAR_BROKER_PUBLIC_KEY and daemon URL HANGAR_DAEMON_URL,
# unless the variables below are set.
terraform {
  required_providers {
    hangar = {
      source = "hangarhq/hangar"
    }
  }
}

variable "fly_api_url" {
  description = "Fly Machines API base URL (null: FLY_API_URL, else Fly's public API)."
  type        = string
  default     = null
}

variable "fly_api_token" {
  description = "Fly API token (null: FLY_API_TOKEN)."
  type        = string
  default     = null
  sensitive   = true
}

variable "broker_public_key" {
  description = "The daemon's broker public key (null: HANGAR_BROKER_PUBLIC_KEY)."
  type        = string
  default     = null
}

variable "daemon_url" {
  description = "URL of the hangar daemon that workers dial home to (null: HANGAR_DAEMON_URL, else the daemon dials the workers)."
  type        = string
  default     = null
}

variable "image" {
  description = "Worker image; the emulator runs hangar-agent for it."
  type        = string
  default     = "hangar-worker:quickstart"
}

provider "hangar" {
  fly_api_url   = var.fly_api_url
  fly_api_token = var.fly_api_token
}

resource "hangar_pool" "quickstart" {
  name     = "quickstart"
  app_name = "hangar-quickstart"
  regions  = ["iad"]
  image    = var.image

  # Workers dial the daemon here. On real Fly, give each tenant's pool its
  # own isolated network as well (network = "hangar-<tenant>"): it requires
  # daemon_url, since the daemon cannot connect into it.
  daemon_url = var.daemon_url

  guest = {
    cpu_kind  = "shared"
    cpus      = 1
    memory_mb = 1024
  }

  min_standby       = 1
  max_machines      = 5
  standby_mode      = "stop"
  idle_timeout      = "30m"
  session_ttl       = "4h"
  broker_public_key = var.broker_public_key
  force_destroy     = true # the demo ends with its sessions still running
}

data "hangar_pool" "quickstart" {
  name       = hangar_pool.quickstart.name
  depends_on = [hangar_pool.quickstart]
}

output "pool" {
  value = hangar_pool.quickstart.name
}

output "app_name" {
  value = hangar_pool.quickstart.app_name
}

output "standby" {
  description = "Standby machines by state, right after apply."
  value       = data.hangar_pool.quickstart.standby_by_state
}
