package store

import "syscall"

// fsSize is the total size of the filesystem holding dir.
func fsSize(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	// Blocks counts fragments of Frsize bytes; old kernels leave it 0.
	unit := st.Frsize
	if unit == 0 {
		unit = st.Bsize
	}
	return int64(st.Blocks) * unit, nil
}
