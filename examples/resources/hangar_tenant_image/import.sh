# A tenant image is imported as <pool>/<name>.
terraform import hangar_tenant_image.acme default/acme-node22
