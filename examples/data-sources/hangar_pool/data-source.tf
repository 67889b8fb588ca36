data "hangar_pool" "default" {
  name = hangar_pool.default.name
}

output "standby_by_state" {
  value = data.hangar_pool.default.standby_by_state # e.g. { created = 2 }
}

output "pool_machines" {
  value = "${data.hangar_pool.default.total} of ${data.hangar_pool.default.max_machines}"
}

# Fail the plan when the pool has no warm capacity left.
check "warm_capacity" {
  assert {
    condition     = data.hangar_pool.default.standby > 0
    error_message = "Pool ${data.hangar_pool.default.name} has no standby machine."
  }
}
