//go:build !linux

package store

import "io/fs"

func diskBytes(fi fs.FileInfo) int64 { return blocks(fi.Size()) }
