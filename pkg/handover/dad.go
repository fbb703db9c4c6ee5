package handover

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/containernetworking/plugins/pkg/ns"
)

// dadSysctls are the sysctls that make an interface run duplicate address
// detection: the kernel runs it when either is positive.
var dadSysctls = []string{
	"/proc/sys/net/ipv6/conf/default/accept_dad", // inherited by new interfaces
	"/proc/sys/net/ipv6/conf/all/accept_dad",
}

// DADOn returns the sysctls that make new interfaces in netns run
// duplicate address detection, with their values (none without IPv6). A
// switch records them, writes DADOff(them) so that the new interface can
// take the addresses the old one still holds (detection would fail the
// copy), and writes them back after B's ADD, or at recovery.
func DADOn(netns string) (map[string]string, error) {
	on := map[string]string{}
	err := ns.WithNetNSPath(netns, func(ns.NetNS) error {
		for _, path := range dadSysctls {
			v, err := readSysctl(path)
			if errors.Is(err, fs.ErrNotExist) {
				return nil // no IPv6
			}
			if err != nil {
				return err
			}
			if v != "0" {
				on[path] = v
			}
		}
		return nil
	})
	return on, err
}

// DADOff is on with every value 0.
func DADOff(on map[string]string) map[string]string {
	off := make(map[string]string, len(on))
	for path := range on {
		off[path] = "0"
	}
	return off
}

// SetSysctls writes values (path: value) in netns; a namespace that is gone
// needs nothing.
func SetSysctls(netns string, values map[string]string) error {
	if len(values) == 0 {
		return nil
	}
	err := ns.WithNetNSPath(netns, func(ns.NetNS) error {
		var errs []error
		for path, v := range values {
			if err := os.WriteFile(path, []byte(v), 0o644); err != nil {
				errs = append(errs, fmt.Errorf("writing %s: %w", path, err))
			}
		}
		return errors.Join(errs...)
	})
	if errors.As(err, &ns.NSPathNotExistErr{}) {
		return nil
	}
	return err
}
