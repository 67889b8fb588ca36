# A pool is imported by its name; the provider finds its Fly app.
terraform import hangar_pool.default default
