package store

import (
	"fmt"
	"hash/crc32"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ETag is the strong entity tag of b: its length in hex and its CRC-32C
// (Castagnoli) in 8 hex digits, quoted, as in "1f4-0a1b2c3d". A validator
// need not resist forgery, only change when the bytes do, and CRC-32C runs
// in hardware.
func ETag(b []byte) string {
	var w ETagWriter
	w.Write(b)
	return w.ETag()
}

// ETagWriter computes ETag over everything written to it, for bodies that
// are streamed rather than held in memory. The zero value is ready to use.
type ETagWriter struct {
	n   int64
	crc uint32
}

// Write never fails.
func (w *ETagWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	w.crc = crc32.Update(w.crc, castagnoli, p)
	return len(p), nil
}

// ETag is the tag of the bytes written so far.
func (w *ETagWriter) ETag() string {
	return fmt.Sprintf(`"%x-%08x"`, w.n, w.crc)
}
