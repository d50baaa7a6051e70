//go:build unix

package transform

import (
	"os"
	"syscall"
)

// stoppedFromOutside tells a renderer ended by a signal that stops
// processes on shutdown (a service manager's SIGTERM, a terminal's SIGINT
// or SIGHUP), which says nothing about the image. A SIGKILL the parent did
// not send is most likely the kernel's out-of-memory killer at work on the
// render, and a crash (SIGSEGV, SIGABRT) is the image's doing.
func stoppedFromOutside(ps *os.ProcessState) bool {
	ws, ok := ps.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() {
		return false
	}
	switch ws.Signal() {
	case syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT:
		return true
	}
	return false
}
