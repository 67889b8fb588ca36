terraform {
  required_providers {
    hangar = {
      source = "hangarhq/hangar"
    }
  }
}

# Credentials come from the environment: FLY_API_TOKEN (and optionally
# FLY_API_URL, FLY_ORG). Set fly_api_url to run against the local Fly
# emulator (`hangard flyemu --listen 127.0.0.1:4280`).
provider "hangar" {
  org = "personal"
}
