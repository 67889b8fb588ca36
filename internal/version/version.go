// Package version is the one place every hangar binary (hangard, hangar,
// hangar-agent and terraform-provider-hangar) reads its release version
// from. Release builds set it at link time, goreleaser and `make build`
// alike:
//
//	-ldflags "-X github.com/hangarhq/hangar/internal/version.Version=1.2.3"
package version

import "runtime/debug"

// Version is the release version; "dev" in a build that did not set it.
// It must stay a plain string variable with a constant initialiser: the
// linker's -X only rewrites those.
var Version = "dev"

// Commit is the git commit the binary was built from, when the build set it
// (-X …/internal/version.Commit=…); empty otherwise.
var Commit = ""

// Get is the version to report: Version when the build set it, else the
// module version Go recorded (a `go install …@v1.2.3` build), else "dev".
func Get() string {
	if Version != "dev" && Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
