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
	typ   string   // item type; "" is a coded image, av01
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
	var refs []byte
	if thumbnail {
		// thmb: item 1 is a thumbnail of item 2.
		refs = mkbox("thmb", []byte{0, 1}, []byte{0, 1}, []byte{0, 2})
	}
	return buildAVIF(ftyp, hdlr, []avifItem{a, b}, 2, refs)
}

// AVIFGrid lays single-image AVIFs of one size out as a grid image, cols
// tiles wide, the way sharp-pitm.avif (sharp's test fixture) and cameras
// store large pictures: the tiles are items 1..n, each a coded image of
// its own, and the grid is item n+1, the primary item (pitm), which
// references them (iref dimg) and has no coded data of its own, only the
// grid's layout and output size. The picture is the grid; a decoder that
// shows item 1, or "page 0", shows its top-left tile.
func AVIFGrid(cols int, tiles ...[]byte) []byte {
	if cols < 1 || len(tiles)%cols != 0 || len(tiles) > 255 {
		panic(fmt.Sprintf("testmedia: %d tiles do not make rows of %d", len(tiles), cols))
	}
	var ftyp, hdlr []byte
	items := make([]avifItem, len(tiles), len(tiles)+1)
	for i, t := range tiles {
		ftyp, hdlr, items[i] = readAVIFItem(t)
	}
	w, h := ispeSize(items[0].props)
	for _, it := range items {
		if tw, th := ispeSize(it.props); tw != w || th != h {
			panic(fmt.Sprintf("testmedia: grid tiles of %dx%d and %dx%d", w, h, tw, th))
		}
	}
	rows := len(tiles) / cols
	gw, gh := uint32(cols)*w, uint32(rows)*h
	if gw > 0xffff || gh > 0xffff {
		panic("testmedia: grid over 65535 pixels wide or high")
	}
	// ImageGrid: version 0, flags 0 (16-bit sizes), rows-1, columns-1,
	// output width and height.
	layout := []byte{0, 0, byte(rows - 1), byte(cols - 1)}
	layout = binary.BigEndian.AppendUint16(layout, uint16(gw))
	layout = binary.BigEndian.AppendUint16(layout, uint16(gh))
	ispe := fullbox("ispe", 0, binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, gw), gh))
	items = append(items, avifItem{typ: "grid", props: [][]byte{ispe}, data: layout})

	grid := uint16(len(items))
	dimg := binary.BigEndian.AppendUint16(nil, grid)
	dimg = binary.BigEndian.AppendUint16(dimg, uint16(len(tiles)))
	for i := range tiles {
		dimg = binary.BigEndian.AppendUint16(dimg, uint16(i+1))
	}
	return buildAVIF(ftyp, hdlr, items, grid, mkbox("dimg", dimg))
}

// ispeSize is the image size an item's ispe property declares.
func ispeSize(props [][]byte) (w, h uint32) {
	for _, p := range props {
		if string(p[4:8]) == "ispe" {
			return binary.BigEndian.Uint32(p[12:]), binary.BigEndian.Uint32(p[16:])
		}
	}
	panic("testmedia: item without ispe")
}

// buildAVIF writes items as items 1..n of one file whose primary item is
// primary; refs are the iref box's references, if any. Every item's data
// goes in mdat, in item order.
func buildAVIF(ftyp, hdlr []byte, items []avifItem, primary uint16, refs []byte) []byte {
	var iinf, ipco, ipma bytes.Buffer
	iinf.Write(binary.BigEndian.AppendUint16(nil, uint16(len(items)))) // entry count
	ipma.Write(binary.BigEndian.AppendUint32(nil, uint32(len(items))))
	prop := 0
	for i, it := range items {
		id := uint16(i + 1)
		typ := it.typ
		if typ == "" {
			typ = "av01"
		}
		infe := fullbox("infe", 2, binary.BigEndian.AppendUint16(nil, id), []byte{0, 0}, []byte(typ), []byte{0})
		iinf.Write(infe)
		binary.Write(&ipma, binary.BigEndian, id)
		ipma.WriteByte(byte(len(it.props)))
		for _, p := range it.props {
			ipco.Write(p)
			prop++
			if prop > 0x7f {
				panic("testmedia: too many AVIF properties for 7-bit ipma indices")
			}
			idx := byte(prop)
			if string(p[4:8]) == "av1C" { // the codec configuration is essential
				idx |= 0x80
			}
			ipma.WriteByte(idx)
		}
	}
	var iref []byte
	if refs != nil {
		iref = fullbox("iref", 0, refs)
	}
	// iloc with placeholder base offsets, fixed up once the layout is known.
	iloc := func(base uint32) []byte {
		var p bytes.Buffer
		p.Write([]byte{0x44, 0x40})
		p.Write(binary.BigEndian.AppendUint16(nil, uint16(len(items))))
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
			fullbox("pitm", 0, binary.BigEndian.AppendUint16(nil, primary)),
			iref,
			mkbox("iprp", mkbox("ipco", ipco.Bytes()), fullbox("ipma", 0, ipma.Bytes())))
	}
	head := len(ftyp) + len(meta(0)) + 8 // the mdat header
	out := append(append([]byte{}, ftyp...), meta(uint32(head))...)
	var data [][]byte
	for _, it := range items {
		data = append(data, it.data)
	}
	return append(out, mkbox("mdat", data...)...)
}
