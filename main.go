// Command terraform-provider-hangar is the Terraform provider for hangar
// worker pools and tenant images on Fly.io (see provider/).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"

	"github.com/hangarhq/hangar/internal/version"
	"github.com/hangarhq/hangar/provider"
)

func main() {
	var debug, showVersion bool
	flag.BoolVar(&debug, "debug", false, "run the provider with support for debuggers like delve")
	flag.BoolVar(&showVersion, "version", false, "print the version and exit")
	flag.Parse()
	if showVersion {
		fmt.Println("terraform-provider-hangar", version.Get())
		return
	}

	err := providerserver.Serve(context.Background(), provider.New(version.Get()), providerserver.ServeOpts{
		Address: "registry.terraform.io/hangarhq/hangar",
		Debug:   debug,
	})
	if err != nil {
		log.Fatal(err.Error())
	}
}
