package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ErrLocked is returned by LockDir when another process holds the state dir.
var ErrLocked = errors.New("another process (rewired) holds the state dir")

// LockDir takes the state dir's writer lock (flock of dir/lock), as the
// reference host-local IPAM does for its store: one writer at a time, the
// daemon for its whole life, the plugin's no-daemon DEL for one request. The
// kernel releases it when the holder exits, however it exits. With wait it
// blocks until the lock is free; without it fails at once with ErrLocked.
func LockDir(dir string, wait bool) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state dir lock: %w", err)
	}
	how := unix.LOCK_EX
	if !wait {
		how |= unix.LOCK_NB
	}
	for {
		err = unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("state dir lock: %w", err)
	}
	return func() { f.Close() }, nil
}

// Exists fails when dir holds no store (the no-daemon DEL: a state dir
// without a store is not Rewire's, or not this node's, and creating one
// there would only hide that nothing was released).
func Exists(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "sandboxes")); err != nil {
		return fmt.Errorf("no Rewire store in %s: %w", dir, err)
	}
	return nil
}
