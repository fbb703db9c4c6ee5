// Package krewcheck validates the krew plugin manifest and the release
// archives that make dist (hack/dist.sh) writes, with krew's own validator
// and installer. It is a module of its own: sigs.k8s.io/krew v0.4.3
// requires k8s.io/client-go v11.0.0+incompatible, which would replace
// Rewire's client-go if krew were a dependency of the main module.
//
//	REWIRE_DIST_DIR=$PWD/dist go test ./tools/krewcheck/   (from the module: cd tools/krewcheck)
//
// Without REWIRE_DIST_DIR the test runs hack/dist.sh itself (two platforms)
// into a temporary directory.
package krewcheck
