package leancni

import (
	"errors"
	"os"
	"strings"
	"sync"
)

// names is the set of the cache's file names: listed from the results
// dir on first use, then kept by the CNI's own writes and removals, so
// that finding a container's files costs no directory read (a node's
// cache holds a file per network per pod: listing 400 took ~0.5 ms).
// Writes that bypass the CNI (libcni's own, Forget) have it listed again.
type names struct {
	mu  sync.Mutex
	set map[string]bool // nil: to be listed
}

// CachedNames returns the names of the cache files of containerID
// ("<network>-<containerID>-<ifName>"; a name may also match a container
// whose ID contains "-<containerID>-").
func (c *CNI) CachedNames(containerID string) ([]string, error) {
	c.names.mu.Lock()
	defer c.names.mu.Unlock()
	if c.names.set == nil {
		listed, err := c.list()
		if err != nil {
			return nil, err
		}
		c.names.set = listed
	}
	part := "-" + containerID + "-"
	var out []string
	for n := range c.names.set {
		if strings.Contains(n, part) {
			out = append(out, n)
		}
	}
	return out, nil
}

// list reads the results dir's names, the files written behind included.
func (c *CNI) list() (map[string]bool, error) {
	if err := c.files.Flush(); err != nil {
		return nil, err
	}
	listed, err := ResultNames(c.cacheDir)
	if err != nil {
		return nil, err
	}
	set := make(map[string]bool, len(listed))
	for _, n := range listed {
		set[n] = true
	}
	return set, nil
}

// ResultNames reads the names of the result cache files in cacheDir
// (none when it has no results dir).
func ResultNames(cacheDir string) ([]string, error) {
	d, err := os.Open(ResultsDir(cacheDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Readdirnames(-1)
}

// Forget has the names listed again: files were written into the cache
// or removed from it past the CNI.
func (c *CNI) Forget() {
	c.names.mu.Lock()
	c.names.set = nil
	c.names.mu.Unlock()
}

// note records that the CNI wrote (present) or removed the file name.
func (c *CNI) note(name string, present bool) {
	c.names.mu.Lock()
	defer c.names.mu.Unlock()
	if c.names.set == nil {
		return // listed when first asked
	}
	if present {
		c.names.set[name] = true
	} else {
		delete(c.names.set, name)
	}
}
