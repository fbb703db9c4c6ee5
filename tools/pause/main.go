// Command pause is the sandbox ("pause") container of the end-to-end node:
// it sleeps until SIGTERM or SIGINT and reaps every child it inherits, like
// registry.k8s.io/pause. Built static (CGO_ENABLED=0) into the pause image by
// tools/image -kind pause.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
