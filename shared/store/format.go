package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// A Dir file holds one key: a fixed header, the meta (JSON), then the body.
// One file means one rename publishes meta and bytes together, so two
// writers of a key can never leave one's meta beside the other's bytes.
//
//	offset  size  field
//	0       4     magic "MPXS"
//	4       2     format version (1), big-endian
//	6       2     kind: 1 object, 2 failure marker
//	8       4     meta length in bytes
//	12      8     body length in bytes
//	20      ...   meta, then body
//
// A file whose size is not exactly 20 + meta + body is corrupt: a miss.
// The meta of a streamed body reserves room for the ETag computed at its
// end, so it may end in spaces.
const (
	fileMagic     = "MPXS"
	formatVersion = 1
	headerSize    = 20
	// maxMetaSize bounds what a corrupt header can make a reader allocate;
	// real metas are a few hundred bytes.
	maxMetaSize = 64 << 10
)

type fileKind uint16

const (
	kindObject  fileKind = 1
	kindFailure fileKind = 2
)

var (
	// errNotStore: the file does not start with the magic. It is either
	// the old two-file layout or not the store's at all.
	errNotStore = errors.New("store: not a store file")
	// errCorrupt: the magic is there but the rest does not add up.
	errCorrupt = errors.New("store: corrupt store file")
)

type header struct {
	kind    fileKind
	metaLen uint32
	bodyLen uint64
}

func (h header) bytes() []byte {
	b := make([]byte, headerSize)
	copy(b, fileMagic)
	binary.BigEndian.PutUint16(b[4:], formatVersion)
	binary.BigEndian.PutUint16(b[6:], uint16(h.kind))
	binary.BigEndian.PutUint32(b[8:], h.metaLen)
	binary.BigEndian.PutUint64(b[12:], h.bodyLen)
	return b
}

// bodyOffset is where the body starts in the file.
func (h header) bodyOffset() int64 { return headerSize + int64(h.metaLen) }

// readHead reads and checks the header and meta of a file of the given
// size. It returns errNotStore or errCorrupt (wrapped) for files it cannot
// use, and other errors as they come.
func readHead(r io.ReaderAt, size int64) (header, []byte, error) {
	var b [headerSize]byte
	n, err := r.ReadAt(b[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return header{}, nil, fmt.Errorf("store: read header: %w", err)
	}
	if n < len(fileMagic) || string(b[:len(fileMagic)]) != fileMagic {
		return header{}, nil, errNotStore
	}
	if n < headerSize {
		return header{}, nil, fmt.Errorf("%w: %d bytes", errCorrupt, size)
	}
	h := header{
		kind:    fileKind(binary.BigEndian.Uint16(b[6:])),
		metaLen: binary.BigEndian.Uint32(b[8:]),
		bodyLen: binary.BigEndian.Uint64(b[12:]),
	}
	switch {
	case binary.BigEndian.Uint16(b[4:]) != formatVersion:
		return header{}, nil, fmt.Errorf("%w: version %d", errCorrupt, binary.BigEndian.Uint16(b[4:]))
	case h.kind != kindObject && h.kind != kindFailure:
		return header{}, nil, fmt.Errorf("%w: kind %d", errCorrupt, h.kind)
	case h.metaLen > maxMetaSize || h.bodyLen > uint64(size) || h.bodyOffset()+int64(h.bodyLen) != size:
		return header{}, nil, fmt.Errorf("%w: %d+%d+%d bytes in a file of %d", errCorrupt, headerSize, h.metaLen, h.bodyLen, size)
	}
	meta := make([]byte, h.metaLen)
	if _, err := r.ReadAt(meta, headerSize); err != nil {
		return header{}, nil, fmt.Errorf("store: read meta: %w", err)
	}
	return h, meta, nil
}

// objectMeta is Meta as stored; its own names keep the format independent
// of the Go struct.
type objectMeta struct {
	ContentType string `json:"content_type"`
	Disposition string `json:"disposition,omitempty"`
	ETag        string `json:"etag"`
}

// markerMeta is a failure marker; its age is the file's mtime.
type markerMeta struct {
	Status int   `json:"status"`
	TTL    int64 `json:"ttl_ns"`
}

// etagPlaceholder is as long as any ETag can be (a 64-bit length in hex),
// so the meta written before a streamed body reserves room for the tag
// computed at its end.
var etagPlaceholder = `"` + strings.Repeat("f", 16) + "-" + strings.Repeat("f", 8) + `"`

// padMeta encodes m in exactly size bytes, padded with spaces (which JSON
// ignores), to be written over a reservation of that size.
func padMeta(m objectMeta, size int) ([]byte, error) {
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode meta: %w", err)
	}
	if len(raw) > size {
		return nil, fmt.Errorf("meta of %d bytes outgrew the %d reserved", len(raw), size)
	}
	return append(raw, strings.Repeat(" ", size-len(raw))...), nil
}

// decodeObject reads an object's meta; bodyLen comes from the header.
func decodeObject(raw []byte, bodyLen uint64) (Meta, error) {
	var m objectMeta
	if err := json.Unmarshal(raw, &m); err != nil {
		return Meta{}, fmt.Errorf("%w: meta: %v", errCorrupt, err)
	}
	return Meta{ContentType: m.ContentType, Disposition: m.Disposition, ETag: m.ETag, Size: int64(bodyLen)}, nil
}

func decodeMarker(raw []byte) (markerMeta, error) {
	var m markerMeta
	if err := json.Unmarshal(raw, &m); err != nil {
		return markerMeta{}, fmt.Errorf("%w: marker: %v", errCorrupt, err)
	}
	return m, nil
}

// isOldMarker tells a failure marker of the old layout: "<status> <ttl>".
func isOldMarker(b []byte) bool {
	f := strings.Fields(string(b))
	if len(f) != 2 || len(b) > 32 {
		return false
	}
	for _, s := range f {
		if strings.Trim(s, "0123456789") != "" {
			return false
		}
	}
	return true
}
