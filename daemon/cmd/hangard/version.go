package main

import (
	"context"
	"fmt"

	"github.com/hangarhq/hangar/internal/version"
)

func init() {
	register("version", "print the version", runVersion)
}

func runVersion(_ context.Context, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("unexpected arguments: %v", args)
	}
	fmt.Println("hangard", version.Get())
	return nil
}
