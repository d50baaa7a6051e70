package testmedia

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// AVIF files are ISOBMFF: boxes of a 32-bit size and a 4-byte type. An
// image item is described in the meta box (its location in iloc, its
// type in iinf, its properties in iprp) and its data lies in mdat. The
// generators here take single-image AVIFs (as libvips writes them: one
// av01 item, properties av1C, ispe and pixi) and recombine their items,
// which no encoder here can do.

// avifItem is one image item taken from a single-image AVIF.
type avifItem struct {
	props [][]byte // whole property boxes, in ipco order
	data  []byte
}

func boxes(b []byte) map[string][]byte {
	out := map[string][]byte{}
	for len(b) >= 8 {
		n := int(binary.BigEndian.Uint32(b))
		if n < 8 || n > len(b) {
			panic("testmedia: bad box")
		}
		out[string(b[4:8])] = b[:n]
		b = b[n:]
	}
	return out
}

func children(b []byte) [][]byte {
	var out [][]byte
	for len(b) >= 8 {
		n := int(binary.BigEndian.Uint32(b))
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

// readAVIFItem takes the one item of a single-image AVIF.
func readAVIFItem(file []byte) (ftyp, hdlr []byte, it avifItem) {
	top := boxes(file)
	meta := boxes(top["meta"][12:]) // meta is a full box
	ipco := boxes(meta["iprp"][8:])["ipco"]
	it.props = children(ipco[8:])
	// iloc version 0, offset/length/base offset sizes 4, one item, one
	// extent: where its data lies in the file.
	iloc := meta["iloc"]
	if iloc[12] != 0x44 || iloc[13] != 0x40 || binary.BigEndian.Uint16(iloc[14:]) != 1 {
		panic(fmt.Sprintf("testmedia: unexpected iloc % x", iloc[8:]))
	}
	base := binary.BigEndian.Uint32(iloc[20:])
	off := binary.BigEndian.Uint32(iloc[26:])
	n := binary.BigEndian.Uint32(iloc[30:])
	it.data = file[base+off : base+off+n]
	return top["ftyp"], meta["hdlr"], it
}

func mkbox(typ string, payload ...[]byte) []byte {
	n := 8
	for _, p := range payload {
		n += len(p)
	}
	b := binary.BigEndian.AppendUint32(make([]byte, 0, n), uint32(n))
	b = append(b, typ...)
	for _, p := range payload {
		b = append(b, p...)
	}
	return b
}

func fullbox(typ string, version byte, payload ...[]byte) []byte {
	return mkbox(typ, append([][]byte{{version, 0, 0, 0}}, payload...)...)
}

// AVIFPrimarySecond combines two single-image AVIFs into one file with two
// image items, first's as item 1 and primary's as item 2, and a pitm box
// naming item 2: the image a viewer shows is the second one. With
// thumbnail, item 1 is also declared primary's thumbnail (an iref thmb
// reference), which makes it no longer a top-level image. Decoders that
// take the first item, or a thumbnail, show the wrong picture.
func AVIFPrimarySecond(first, primary []byte, thumbnail bool) []byte {
	ftyp, hdlr, a := readAVIFItem(first)
	_, _, b := readAVIFItem(primary)

	items := []avifItem{a, b}
	var iinf, ipco, ipma bytes.Buffer
	iinf.Write([]byte{0, 2}) // entry count
	ipma.Write([]byte{0, 0, 0, 2})
	prop := 0
	for i, it := range items {
		id := uint16(i + 1)
		infe := fullbox("infe", 2, binary.BigEndian.AppendUint16(nil, id), []byte{0, 0}, []byte("av01"), []byte{0})
		iinf.Write(infe)
		binary.Write(&ipma, binary.BigEndian, id)
		ipma.WriteByte(byte(len(it.props)))
		for j, p := range it.props {
			ipco.Write(p)
			prop++
			idx := byte(prop)
			if j == 0 { // av1C is essential
				idx |= 0x80
			}
			ipma.WriteByte(idx)
		}
	}
	var iref []byte
	if thumbnail {
		// thmb: item 1 is a thumbnail of item 2.
		ref := mkbox("thmb", []byte{0, 1}, []byte{0, 1}, []byte{0, 2})
		iref = fullbox("iref", 0, ref)
	}
	// iloc with placeholder base offsets, fixed up once the layout is known.
	iloc := func(base uint32) []byte {
		var p bytes.Buffer
		p.Write([]byte{0x44, 0x40, 0, byte(len(items))})
		off := base
		for i, it := range items {
			binary.Write(&p, binary.BigEndian, uint16(i+1))
			p.Write([]byte{0, 0}) // data reference index
			binary.Write(&p, binary.BigEndian, off)
			p.Write([]byte{0, 1, 0, 0, 0, 0}) // one extent at offset 0
			binary.Write(&p, binary.BigEndian, uint32(len(it.data)))
			off += uint32(len(it.data))
		}
		return fullbox("iloc", 0, p.Bytes())
	}
	meta := func(base uint32) []byte {
		return fullbox("meta", 0, hdlr, iloc(base),
			fullbox("iinf", 0, iinf.Bytes()),
			fullbox("pitm", 0, []byte{0, 2}),
			iref,
			mkbox("iprp", mkbox("ipco", ipco.Bytes()), fullbox("ipma", 0, ipma.Bytes())))
	}
	head := len(ftyp) + len(meta(0)) + 8 // the mdat header
	out := append(append([]byte{}, ftyp...), meta(uint32(head))...)
	out = append(out, mkbox("mdat", a.data, b.data)...)
	return out
}
