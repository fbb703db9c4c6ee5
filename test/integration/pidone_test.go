package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rewire-cni/rewire/pkg/selection"
)

// TestDelegatesOutliveKilledDaemon runs rewired as in its DaemonSet, as PID
// 1 of its own PID namespace, and SIGKILLs the daemon (as the OOM killer
// would) while the delegate of a pod's macvlan + host-local attachment runs.
// The delegate must finish its ADD instead of dying with PID 1, the daemon
// is restarted in place, waits for it, undoes the interrupted ADD, and
// after the runtime's DEL nothing is left.
func TestDelegatesOutliveKilledDaemon(t *testing.T) {
	slow := t.TempDir()
	tools := os.Getenv("REWIRE_TOOLS_DIR")
	// A macvlan whose ADD starts, waits, then does its work: the daemon is
	// killed in between.
	script := fmt.Sprintf(`#!/bin/sh
[ "$CNI_COMMAND" = ADD ] || exec %[1]s/macvlan "$@"
: > %[2]s/started
sleep 1
%[1]s/macvlan "$@" > %[2]s/result
echo $? > %[2]s/done.tmp && mv %[2]s/done.tmp %[2]s/done
cat %[2]s/result
`, tools, slow)
	must(t, os.WriteFile(filepath.Join(slow, "slowmacvlan"), []byte(script), 0o755))
	e := newEnv(t, envOpts{binDir: slow, pidNamespace: true})
	conf := strings.Replace(e.macvlanConf("slow", "192.168.36"), `"type":"macvlan"`, `"type":"slowmacvlan"`, 1)
	e.createNAD("default", "slow", conf, nil)
	p := e.newPod("default", "killed-mid-add", map[string]string{selection.NetworksAnnotation: "slow"})

	added := make(chan error, 1)
	go func() { _, err := e.rt.Add(context.Background(), p); added <- err }()
	waitUntil(t, 20*time.Second, "the slow delegate to start", func() bool { return pathExists(filepath.Join(slow, "started")) })
	daemon, err := e.daemon.Supervised()
	must(t, err)
	must(t, syscall.Kill(daemon, syscall.SIGKILL))
	if err := <-added; err == nil {
		t.Fatal("the ADD succeeded although its daemon was killed during it")
	}
	waitUntil(t, 20*time.Second, "the delegate to finish", func() bool { return pathExists(filepath.Join(slow, "done")) })
	if rc, _ := os.ReadFile(filepath.Join(slow, "done")); strings.TrimSpace(string(rc)) != "0" {
		t.Errorf("the delegate's macvlan exited %s", rc)
	}
	must(t, e.daemon.WaitReady(30*time.Second))
	for _, want := range []string{"restarting it in place", "waiting for the delegates a previous rewired left running"} {
		if !strings.Contains(e.daemon.Log(), want) {
			t.Errorf("rewired's log lacks %q:\n%s", want, e.daemon.Log())
		}
	}
	if again, err := e.daemon.Supervised(); err != nil || again == daemon {
		t.Errorf("daemon after the kill: pid %d (%v), killed one %d", again, err, daemon)
	}
	must(t, e.rt.Del(context.Background(), p))
	e.assertNoLeaks()
}

func pathExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// waitUntil polls cond until it holds, or fails the test after timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
	}
}
