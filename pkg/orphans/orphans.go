// Package orphans keeps a restarted daemon from racing the delegate plugins
// its previous instance left running. A killed daemon does not take its
// children with it: a bridge plugin still half-way through an ADD would
// otherwise interleave with the recovery DEL and the runtime's retried ADD
// and leave a stray interface behind. Every delegate inherits an instance
// mark in its environment; at start the daemon waits for processes carrying
// another instance's mark to finish before it recovers or serves.
package orphans

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Env is the environment variable carrying the daemon instance.
const Env = "REWIRE_DAEMON_INSTANCE"

// Mark sets this instance's mark in the process environment (inherited by
// every delegate started from now on) and returns it.
func Mark() (string, error) {
	id := strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	return id, os.Setenv(Env, id)
}

// Running returns the PIDs of processes marked by another instance.
func Running(self string) []int {
	prefix := []byte(Env + "=")
	own := []byte(Env + "=" + self)
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var pids []int
	for _, d := range dirs {
		env, err := os.ReadFile(filepath.Join(d, "environ"))
		if err != nil {
			continue // gone, or a kernel thread
		}
		for _, kv := range bytes.Split(env, []byte{0}) {
			if bytes.HasPrefix(kv, prefix) && !bytes.Equal(kv, own) {
				if pid, err := strconv.Atoi(filepath.Base(d)); err == nil && pid != os.Getpid() {
					pids = append(pids, pid)
				}
				break
			}
		}
	}
	return pids
}

// Wait waits until no process of another instance runs, or ctx ends.
func Wait(ctx context.Context, self string) error {
	for {
		pids := Running(self)
		if len(pids) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("delegates of a previous daemon still running (pids %v): %w", pids, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
