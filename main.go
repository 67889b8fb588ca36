// Command terraform-provider-hangar is the Terraform provider for hangar
// worker pools and tenant images on Fly.io (see provider/).
package main

import (
	"context"
	"flag"
	"log"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"

	"github.com/hangarhq/hangar/provider"
)

// version is set by goreleaser: -X main.version={{.Version}}.
var version = "dev"

func main() {
	var debug bool
	flag.BoolVar(&debug, "debug", false, "run the provider with support for debuggers like delve")
	flag.Parse()

	err := providerserver.Serve(context.Background(), provider.New(version), providerserver.ServeOpts{
		Address: "registry.terraform.io/hangarhq/hangar",
		Debug:   debug,
	})
	if err != nil {
		log.Fatal(err.Error())
	}
}
