// Package version holds the version of Rewire's binaries (rewired, the
// rewire plugin, kubectl-rewire), set once at link time for all three.
package version

import "runtime/debug"

// Version is set at build time:
//
//	go build -ldflags "-X github.com/rewire-cni/rewire/pkg/version.Version=v0.3.0"
//
// (make build and make dist do). Left at "dev", String falls back to the
// module version Go records for `go install ...@version` builds.
var Version = "dev"

// String returns Version, or the main module's version from the build info
// when Version was not set and Go recorded one ("dev" otherwise).
func String() string {
	return resolve(Version, debug.ReadBuildInfo)
}

// resolve is String with the build info reader as a parameter (tests).
func resolve(set string, read func() (*debug.BuildInfo, bool)) string {
	if set != "dev" && set != "" {
		return set
	}
	if bi, ok := read(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
