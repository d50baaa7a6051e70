package store

import (
	"io/fs"
	"syscall"
	"testing"
)

// diskBytes is what fi takes on disk: its blocks, not its length.
func diskBytes(fi fs.FileInfo) int64 {
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}

func TestDirDefaultRespectsTheFilesystem(t *testing.T) {
	d := newDir(t, DirOptions{})
	var st syscall.Statfs_t
	if err := syscall.Statfs(d.root, &st); err != nil {
		t.Fatal(err)
	}
	quarter := int64(st.Blocks) * st.Frsize / 4
	if want := min(DefaultMaxBytes, quarter); d.MaxBytes() != want {
		t.Errorf("default budget %d, want %d (a quarter of the filesystem is %d)", d.MaxBytes(), want, quarter)
	}
}
