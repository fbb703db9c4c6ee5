package orphans

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"
)

func TestWaitForAnotherInstance(t *testing.T) {
	self, err := Mark()
	if err != nil {
		t.Fatal(err)
	}
	// The other instance's process lives until the test ends it, however
	// slowly this machine runs.
	child := exec.Command("sleep", "60")
	child.Env = append(os.Environ(), Env+"=previous-instance")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Process.Kill()
	exited := make(chan struct{})
	go func() { child.Wait(); close(exited) }()
	own := exec.Command("sleep", "60")
	if err := own.Start(); err != nil { // inherits this instance's mark
		t.Fatal(err)
	}
	defer own.Process.Kill()
	if pids := Running(self); len(pids) != 1 || pids[0] != child.Process.Pid {
		t.Fatalf("running = %v, want only %d", pids, child.Process.Pid)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	waited := make(chan error, 1)
	go func() { waited <- Wait(ctx, self) }()
	select {
	case err := <-waited:
		t.Fatalf("Wait returned while the other instance's process ran: %v", err)
	case <-time.After(200 * time.Millisecond): // Wait polls: it had its chance to return
	}
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-exited
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
}
