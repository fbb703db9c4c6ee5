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
	child := exec.Command("sleep", "0.3")
	child.Env = append(os.Environ(), Env+"=previous-instance")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	go child.Wait()
	own := exec.Command("sleep", "5")
	if err := own.Start(); err != nil { // inherits this instance's mark
		t.Fatal(err)
	}
	defer own.Process.Kill()
	if pids := Running(self); len(pids) != 1 || pids[0] != child.Process.Pid {
		t.Fatalf("running = %v, want only %d", pids, child.Process.Pid)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := Wait(ctx, self); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < 100*time.Millisecond {
		t.Error("Wait returned before the other instance's process ended")
	}
}
