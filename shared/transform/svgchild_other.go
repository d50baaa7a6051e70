//go:build !unix

package transform

import "os"

// stoppedFromOutside: without POSIX signals, no end of the renderer is
// known to come from outside.
func stoppedFromOutside(*os.ProcessState) bool { return false }
