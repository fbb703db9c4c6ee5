package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/containernetworking/cni/libcni"
)

// clusterMemo keeps the cluster network's config list (a file, or the
// Multus config's delegate, with its chained plugins) while the directory
// it is read from is unchanged, so that an ADD does not read and parse
// the same files again. "Unchanged" compares the name, size, modification
// and change times and inode of every entry of the directory and of its
// subdirectories (the chain directories), symbolic links followed: a
// config replaced by a rename, edited, added or removed is read again. An
// edit in place that keeps the size within the file system's timestamp
// granularity (a few milliseconds) is the one change it can miss.
type clusterMemo struct {
	mu    sync.Mutex
	stamp string
	list  *libcni.NetworkConfigList
}

// get returns the list load returned for dir's current stamp, loading it
// when dir changed. Errors are not kept.
func (m *clusterMemo) get(dir string, load func() (*libcni.NetworkConfigList, error)) (*libcni.NetworkConfigList, error) {
	stamp, err := dirStamp(dir, 1)
	if err != nil {
		return load() // cannot tell whether it changed
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.list != nil && m.stamp == stamp {
		return m.list, nil
	}
	list, err := load()
	if err != nil {
		m.list = nil
		return nil, err
	}
	m.stamp, m.list = stamp, list
	return list, nil
}

// dirStamp describes dir's entries (depth more levels of subdirectories).
func dirStamp(dir string, depth int) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		st, err := os.Stat(p)
		if err != nil {
			fmt.Fprintf(&b, "%s:gone;", e.Name())
			continue
		}
		fmt.Fprintf(&b, "%s:%d:%d:%v;", e.Name(), st.Size(), st.ModTime().UnixNano(), sysStamp(st))
		if st.IsDir() && depth > 0 {
			sub, err := dirStamp(p, depth-1)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(&b, "[%s]", sub)
		}
	}
	return b.String(), nil
}

// sysStamp is a file's inode and change time.
func sysStamp(st os.FileInfo) [3]int64 {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return [3]int64{int64(s.Ino), s.Ctim.Sec, s.Ctim.Nsec}
	}
	return [3]int64{}
}
