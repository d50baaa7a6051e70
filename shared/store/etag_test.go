package store

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"slices"
	"testing"
)

func TestETag(t *testing.T) {
	// CRC-32C of "123456789" is e3069283 (RFC 3720, B.4).
	if got := ETag([]byte("123456789")); got != `"9-e3069283"` {
		t.Errorf("ETag = %s", got)
	}
	if got := ETag(nil); got != `"0-00000000"` {
		t.Errorf("ETag(nil) = %s", got)
	}
	b := bytes.Repeat([]byte("misskey "), 10000)
	var w ETagWriter
	for chunk := range slices.Chunk(b, 777) {
		w.Write(chunk)
	}
	if w.ETag() != ETag(b) || w.ETag() != fmt.Sprintf(`"%x-%08x"`, len(b), crc32c(b)) {
		t.Errorf("streamed %s, whole %s", w.ETag(), ETag(b))
	}
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) }
