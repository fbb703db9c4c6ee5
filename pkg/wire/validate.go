package wire

import (
	"fmt"
	"strings"
)

// Limits of the request fields that become parts of file paths or names.
const (
	maxContainerID = 255  // the store's record file name
	maxIfName      = 15   // IFNAMSIZ - 1
	maxNetNS       = 4095 // PATH_MAX - 1
)

// Validate checks every field of the request that ends up in a file path or
// a link name — CNI_CONTAINERID (store records, libcni's cache, device-info
// files), CNI_IFNAME (link names, device-info files) and CNI_NETNS (opened
// as a namespace file) — before anything uses them. A field that is absent
// passes: which ones a command needs is checked with the command. The
// checks use no regexp so that the plugin, which shares this package, stays
// small.
func (r *Request) Validate() error {
	for _, f := range []struct {
		env, value string
		check      func(string) error
	}{
		{"CNI_CONTAINERID", r.ContainerID, ValidContainerID},
		{"CNI_IFNAME", r.IfName, ValidIfName},
		{"CNI_NETNS", r.NetNS, ValidNetNS},
	} {
		if f.value == "" {
			continue
		}
		if err := f.check(f.value); err != nil {
			return fmt.Errorf("%s: %w", f.env, err)
		}
	}
	return nil
}

// ValidContainerID accepts what the CNI spec allows for a container ID:
// letters, digits, '_', '.' and '-', starting with a letter or digit (so
// never "." or ".." and never a path separator or a glob character).
func ValidContainerID(id string) error {
	ok := id != "" && len(id) <= maxContainerID && isAlnum(id[0])
	for i := 1; ok && i < len(id); i++ {
		c := id[i]
		ok = isAlnum(c) || c == '_' || c == '.' || c == '-'
	}
	if !ok {
		return fmt.Errorf("invalid container ID %q: it must be 1 to %d letters, digits, '_', '.' or '-', starting with a letter or digit",
			id, maxContainerID)
	}
	return nil
}

// ValidIfName accepts a Linux interface name: 1 to 15 bytes, not "." or
// "..", without '/', ':', whitespace or control characters.
func ValidIfName(name string) error {
	ok := name != "" && len(name) <= maxIfName && name != "." && name != ".."
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = c > ' ' && c != 0x7f && c != '/' && c != ':'
	}
	if !ok {
		return fmt.Errorf("invalid interface name %q: it must be 1 to %d bytes, not \".\" or \"..\", without '/', ':' or whitespace",
			name, maxIfName)
	}
	return nil
}

// ValidNetNS accepts a network namespace path: an absolute path (as
// /var/run/netns/NAME or /proc/PID/ns/net) without ".." elements and without
// NUL or newline characters.
func ValidNetNS(path string) error {
	var why string
	switch {
	case len(path) > maxNetNS:
		why = "it is too long"
	case !strings.HasPrefix(path, "/"):
		why = "it must be an absolute path"
	case strings.ContainsAny(path, "\x00\n"):
		why = "it contains a NUL or newline character"
	case hasDotDot(path):
		why = `it must not contain ".." elements`
	default:
		return nil
	}
	return fmt.Errorf("invalid network namespace path %q: %s", path, why)
}

func hasDotDot(path string) bool {
	for _, elem := range strings.Split(path, "/") {
		if elem == ".." {
			return true
		}
	}
	return false
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
