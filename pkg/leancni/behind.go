package leancni

import (
	"context"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

// An ADD's cache entry is written behind it: AddNetworkList returns once
// the plugins ran, and a goroutine writes the file. Every method that
// reads or removes entries first waits for the writes of the entries it
// reads (CHECK and DEL of the list, the cached result and config of the
// list, the container's attachments, all of them for GC). Of a process
// crash in between, a DEL gets no prevResult (plugins must cope: an entry
// may always be missing) and a CHECK fails.

// writeBehind writes data to path after any write of path still running.
func (c *CNI) writeBehind(path string, data []byte) {
	done := make(chan struct{})
	c.mu.Lock()
	if c.writing == nil {
		c.writing = map[string]chan struct{}{}
	}
	prev := c.writing[path]
	c.writing[path] = done
	c.mu.Unlock()
	go func() {
		defer close(done)
		if prev != nil {
			<-prev
		}
		err := os.MkdirAll(filepath.Dir(path), 0o700)
		if err == nil {
			err = os.WriteFile(path, data, 0o600)
		}
		if err != nil && c.OnCacheError != nil {
			c.OnCacheError(path, err)
		}
		c.mu.Lock()
		if c.writing[path] == done {
			delete(c.writing, path)
		}
		c.mu.Unlock()
	}()
}

// settle waits for the cache writes of the entries match selects.
func (c *CNI) settle(match func(path string) bool) {
	c.mu.Lock()
	var waits []chan struct{}
	for path, done := range c.writing {
		if match(path) {
			waits = append(waits, done)
		}
	}
	c.mu.Unlock()
	for _, done := range waits {
		<-done
	}
}

// settleList waits for the write of the list's entry for rt.
func (c *CNI) settleList(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) {
	if want, err := c.cachePath(list, rt); err == nil {
		c.settle(func(path string) bool { return path == want })
	}
}

// CheckNetworkList is libcni's, once the entry it reads is written.
func (c *CNI) CheckNetworkList(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	c.settleList(list, rt)
	return c.CNI.CheckNetworkList(ctx, list, rt)
}

// GetNetworkListCachedResult is libcni's, once the entry is written.
func (c *CNI) GetNetworkListCachedResult(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (types.Result, error) {
	c.settleList(list, rt)
	return c.CNI.GetNetworkListCachedResult(list, rt)
}

// GetNetworkListCachedConfig is libcni's, once the entry is written.
func (c *CNI) GetNetworkListCachedConfig(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) ([]byte, *libcni.RuntimeConf, error) {
	c.settleList(list, rt)
	return c.CNI.GetNetworkListCachedConfig(list, rt)
}

// GetCachedAttachments is libcni's, once the container's entries (every
// container's for "") are written.
func (c *CNI) GetCachedAttachments(containerID string) ([]*libcni.NetworkAttachment, error) {
	part := "-" + containerID + "-"
	c.settle(func(path string) bool { return containerID == "" || strings.Contains(filepath.Base(path), part) })
	return c.CNI.GetCachedAttachments(containerID)
}

// GCNetworkList is libcni's, once every entry is written.
func (c *CNI) GCNetworkList(ctx context.Context, list *libcni.NetworkConfigList, args *libcni.GCArgs) error {
	c.settle(func(string) bool { return true })
	return c.CNI.GCNetworkList(ctx, list, args)
}
