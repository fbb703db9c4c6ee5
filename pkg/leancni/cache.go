package leancni

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/types/create"
)

// Files is where the cache files are written, read and removed.
type Files interface {
	WriteFile(path string, data []byte) error
	ReadFile(path string) ([]byte, error)
	Remove(path string) error
	// Flush returns once every file written is on disk, for libcni's
	// readers.
	Flush() error
}

// WriteBehind makes the CNI write its cache files with files (a
// writebehind.Files: behind the ADD) and returns it. libcni's own
// methods that read the cache (CHECK, GC, the cached result, config and
// attachments) flush them first.
func (c *CNI) WriteBehind(files Files) *CNI {
	c.files = files
	return c
}

// direct is Files on the file system, as libcni writes its cache.
type direct struct{}

func (direct) WriteFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}

func (direct) ReadFile(path string) ([]byte, error) { return os.ReadFile(path) }

func (direct) Remove(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func (direct) Flush() error { return nil }

// uncache removes the list's cache entry for rt.
func (c *CNI) uncache(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) {
	if path, err := c.cachePath(list, rt); err == nil && c.files.Remove(path) == nil {
		c.note(filepath.Base(path), false)
	}
}

// cachedResult reads the list's cached result, encoded in the list's
// version (nil: none cached); entries in libcni's legacy format are read by
// libcni. A result cached in the list's version is passed on as it is: it
// is what encoding it again would give.
func (c *CNI) cachedResult(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) ([]byte, error) {
	path, err := c.cachePath(list, rt)
	if err != nil {
		return nil, err
	}
	data, err := c.files.ReadFile(path)
	if err != nil {
		return nil, nil // as libcni: the entry may not exist
	}
	var e cached
	if err := json.Unmarshal(data, &e); err != nil || e.Kind != libcni.CNICacheV1 {
		result, err := c.GetNetworkListCachedResult(list, rt)
		if err != nil || result == nil {
			return nil, err
		}
		return EncodeResult(result)
	}
	result, err := create.CreateFromBytes(e.Result) // a damaged result is none, as in libcni
	if err != nil {
		return nil, err
	}
	if result.Version() == list.CNIVersion {
		return e.Result, nil
	}
	if result, err = result.GetAsVersion(list.CNIVersion); err != nil {
		return nil, err
	}
	return EncodeResult(result)
}

// cached is libcni's cache file format (cachedInfo, kind cniCacheV1).
type cached struct {
	Kind           string          `json:"kind"`
	ContainerID    string          `json:"containerId"`
	Config         []byte          `json:"config"`
	IfName         string          `json:"ifName"`
	NetworkName    string          `json:"networkName"`
	NetNS          string          `json:"netns,omitempty"`
	CniArgs        [][2]string     `json:"cniArgs,omitempty"`
	CapabilityArgs map[string]any  `json:"capabilityArgs,omitempty"`
	Result         json.RawMessage `json:"result,omitempty"`
}

// cache writes the list's result where libcni's DEL, CHECK and
// GetCachedAttachments read it.
func (c *CNI) cache(result types.Result, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	path, err := c.cachePath(list, rt)
	if err != nil {
		return err
	}
	var res json.RawMessage
	if result != nil {
		if res, err = EncodeResult(result); err != nil {
			return err
		}
	}
	data, err := json.Marshal(cached{Kind: libcni.CNICacheV1, ContainerID: rt.ContainerID, Config: list.Bytes, IfName: rt.IfName,
		NetworkName: list.Name, NetNS: rt.NetNS, CniArgs: rt.Args, CapabilityArgs: rt.CapabilityArgs, Result: res})
	if err != nil {
		return err
	}
	if err := c.files.WriteFile(path, data); err != nil {
		return err
	}
	c.note(filepath.Base(path), true)
	return nil
}

// cachePath is the list's cache file for rt.
func (c *CNI) cachePath(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (string, error) {
	if list.Name == "" || rt.ContainerID == "" || rt.IfName == "" {
		return "", fmt.Errorf("cache file path requires network name (%q), container ID (%q), and interface name (%q)", list.Name, rt.ContainerID, rt.IfName)
	}
	return filepath.Join(ResultsDir(c.cacheDir), ResultFile(list.Name, rt.ContainerID, rt.IfName)), nil
}

// ResultsDir is libcni's result cache under a cache dir.
func ResultsDir(cacheDir string) string { return filepath.Join(cacheDir, "results") }

// ResultFile is the name libcni gives a result cache file
// (getCacheFilePath in libcni/api.go).
func ResultFile(network, containerID, ifName string) string {
	return fmt.Sprintf("%s-%s-%s", network, containerID, ifName)
}
